"""Times and durations as people type them on the command line.

Times: ``now``, ``+DURATION`` (from now, to the minute: ``+2h``, ``+1d12h``) or an ISO
time (``2027-03-01T09:00Z``, ``2027-03-01 09:00+01:00``); an ISO time without a zone is
local time. Durations: ``48h``, ``2d``, ``90m``, ``1d12h``, as the API reads them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

import typer

from ecliptic.api.schemas import parse_duration

TIME_HELP = "now, +DURATION (e.g. +2h) or an ISO time (local unless it has a zone)"
END_HELP = "+DURATION from now (e.g. +48h) or an ISO time (local unless it has a zone)"


def parse_when(value: str, option: str, *, allow_now: bool = True) -> datetime | Literal["now"]:
    """A time option: ``now``, ``+DURATION`` or ISO (naive means local time)."""
    text = value.strip()
    if text.lower() == "now":
        if not allow_now:
            raise typer.BadParameter(
                "give a time, e.g. +48h or 2027-03-03T09:00", param_hint=option
            )
        return "now"
    if text.startswith("+"):
        try:
            delta = parse_duration(text[1:])
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint=option) from None
        return (datetime.now(UTC) + delta).replace(second=0, microsecond=0)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"'{value}' is not a time: write "
            + ("now, " if allow_now else "")
            + "+DURATION (+2h) or an ISO time (2027-03-01T09:00Z, 2027-03-01 09:00)",
            param_hint=option,
        ) from None
    if at.tzinfo is None:
        at = at.astimezone()  # local time
    return at


def duration(value: str, option: str) -> timedelta:
    """A duration option (``48h``, ``2d``, ``90m``, ``1d12h``)."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def human_duration(seconds: float) -> str:
    """``10m``, ``2h``, ``1d12h``, ``1h30m``."""
    minutes = max(0, round(seconds / 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (mins, "m")) if n]
    return "".join(parts) or "0m"


def until(at: datetime) -> str:
    """``in 2h``, ``5m ago``, relative to now."""
    seconds = (at - datetime.now(UTC)).total_seconds()
    if abs(seconds) < 60:
        return "now"
    text = human_duration(abs(seconds))
    return f"in {text}" if seconds > 0 else f"{text} ago"
