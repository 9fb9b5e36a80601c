"""How the CLI shows things: Rich tables for people, the API's JSON for scripts.

Values that come from the API (names, reasons, logs) are never read as Rich markup, so
a server named ``[red]x`` or a log line with brackets prints as it is.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ecliptic.client import ApiError, ClientError, WaitError

PHASE_STYLES = {
    "ACTIVE": "green",
    "PENDING": "yellow",
    "BUILDING": "yellow",
    "DELETING": "magenta",
    "ERROR": "bold red",
    "DOWN": "dim",
    "up": "green",
    "down": "red",
    "maintenance": "yellow",
    "retired": "dim",
}


class OutputFormat(StrEnum):
    """What commands print on stdout."""

    table = "table"
    json = "json"


PIPE_WIDTH = 400
"""Line width when stdout is not a terminal: wide enough that tables never wrap for grep."""


def stdout() -> Console:
    """A console on the current stdout (looked up now, so test runners can capture it)."""
    tty = sys.stdout.isatty()
    return Console(file=sys.stdout, highlight=False, width=None if tty else PIPE_WIDTH)


def stderr() -> Console:
    """A console on the current stderr."""
    return Console(file=sys.stderr, highlight=False)


def jsonable(data: Any) -> Any:
    """Models, lists and dicts of them as plain JSON values."""
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, list | tuple):
        return [jsonable(x) for x in data]
    if isinstance(data, dict):
        return {str(k): jsonable(v) for k, v in data.items()}
    return data


def emit_json(data: Any) -> None:
    """One JSON document on stdout, and nothing else."""
    sys.stdout.write(json.dumps(jsonable(data), indent=2) + "\n")
    sys.stdout.flush()


def cell(value: Any) -> Text:
    """A table cell: plain text, styled by phase or state when it is one."""
    if isinstance(value, Text):
        return value
    if value is None or value == "":
        return Text("-", style="dim")
    if isinstance(value, datetime):
        return Text(age(value))
    text = str(value)
    return Text(text, style=PHASE_STYLES.get(text, ""))


def events_table(rows: Sequence[Any]) -> None:
    """Phase changes (``EventOut``: at, from, to, reason) as a table, oldest first."""
    table(
        ["AT", "FROM", "TO", "REASON"],
        [[when(e.at), e.from_phase, e.to_phase, e.reason] for e in rows],
        empty="no events",
    )


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    empty: str | None = None,
) -> None:
    """A table on stdout, or ``empty`` (on stderr) when there are no rows."""
    body = [[cell(v) for v in row] for row in rows]
    if not body and empty:
        note(empty)
        return
    t = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for name in columns:
        t.add_column(name, overflow="fold")  # ids wrap rather than lose characters
    for row in body:
        t.add_row(*row)
    stdout().print(t)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """One object as ``key  value`` lines on stdout."""
    t = Table(box=None, show_header=False, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for key, value in pairs:
        t.add_row(Text(key), cell(value))
    stdout().print(t)


def say(message: str) -> None:
    """A plain line for people on stdout."""
    stdout().print(Text(message))


def note(message: str) -> None:
    """A hint or warning on stderr (never mixed into output scripts parse)."""
    stderr().print(Text(message, style="dim"))


def problem_document(exc: ClientError) -> dict[str, Any]:
    """The error as the API's problem document (``--output json`` prints it on stderr)."""
    doc: dict[str, Any] = {"code": exc.code, "detail": exc.detail}
    if isinstance(exc, ApiError):
        doc["status"] = exc.status
        if exc.errors:
            doc["errors"] = [{"field": e.field, "msg": e.msg} for e in exc.errors]
    return doc


def error(exc: ClientError, *, as_json: bool | None = None) -> None:
    """``error: <detail>`` on stderr, and one line per field the API complained about; with
    ``--output json``, the problem document as one JSON line on stderr instead."""
    if as_json is None:
        from ecliptic.cli.session import current

        as_json = current().json
    if as_json:
        sys.stderr.write(json.dumps(problem_document(exc)) + "\n")
        sys.stderr.flush()
        return
    errors = exc.errors if isinstance(exc, ApiError) else []
    joined = "; ".join(f"{e.field}: {e.msg}" for e in errors)
    if errors and exc.detail == joined:
        lines = ["error: invalid input"]
        lines += [f"  {e.field}: {e.msg}" for e in errors]
    else:
        lines = [f"error: {exc.detail}"]
        lines += [f"  {e.field}: {e.msg}" for e in errors if e.msg not in exc.detail]
    if isinstance(exc, WaitError) and exc.code == "wait_timeout":
        lines.append("  (the object is still there; it may get there later)")
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


@contextmanager
def waiting(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr while a block runs, if stderr is a terminal; yields ``update(text)``."""
    if not sys.stderr.isatty():
        yield lambda _text: None
        return
    with stderr().status(Text(message)) as status:
        yield lambda text: status.update(Text(text))


def age(when: datetime) -> str:
    """How long ago, shortly: ``42s``, ``5m``, ``3h``, ``12d``."""
    seconds = int((datetime.now(UTC) - when).total_seconds())
    if seconds < 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def when(at: datetime | None) -> str:
    """A timestamp in local time, to the minute."""
    return at.astimezone().strftime("%Y-%m-%d %H:%M") if at else "-"


def mib(megabytes: int) -> str:
    """MiB as people read them: ``512 MiB``, ``4 GiB``, ``1.5 GiB``."""
    if megabytes < 1024:
        return f"{megabytes} MiB"
    gib = megabytes / 1024
    return f"{gib:.0f} GiB" if gib == int(gib) else f"{gib:.1f} GiB"
