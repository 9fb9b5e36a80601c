"""The CLI's session: global options, the API client built from them, and commands that see both.

Global options (``--output``, ``--url``, ``--tenancy``, ``--profile``) may be given before
the command (``ecliptic -o json server list``) or after it (``ecliptic server list -o
json``); after wins. Each also comes from the environment (``ECLIPTIC_OUTPUT``,
``ECLIPTIC_URL``, ``ECLIPTIC_TENANCY``, ``ECLIPTIC_PROFILE``); ``ECLIPTIC_TOKEN`` gives a
token without a saved login.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import typer

from ecliptic.cli import output
from ecliptic.cli.exitcodes import ExitCode, exit_code_for
from ecliptic.cli.output import OutputFormat, emit_json
from ecliptic.client import Client, ClientError

F = TypeVar("F", bound=Callable[..., Any])
GLOBAL_PANEL = "Global options"


@dataclass
class Session:
    """Global options of one invocation, and the client made from them."""

    output: OutputFormat = OutputFormat.table
    """Tables for people or the API's JSON."""
    url: str | None = None
    """API URL; the saved one when None."""
    tenancy: str | None = None
    """Tenancy to act in; the saved one when None."""
    profile: str | None = None
    """Which saved credentials to use."""
    _client: Client | None = field(default=None, repr=False)

    @property
    def json(self) -> bool:
        """True when commands print JSON."""
        return self.output == OutputFormat.json

    def client(self) -> Client:
        """The API client: saved credentials, overridden by environment and options."""
        if self._client is None:
            self._client = Client.from_config(self.profile, url=self.url, tenancy=self.tenancy)
        return self._client

    def close(self) -> None:
        """Close the client's connections."""
        if self._client is not None:
            self._client.close()
            self._client = None


_CURRENT: ContextVar[Session | None] = ContextVar("ecliptic_session", default=None)


def current() -> Session:
    """The session of the command being run."""
    session = _CURRENT.get()
    if session is None:
        session = Session()
        _CURRENT.set(session)
    return session


def client() -> Client:
    """The API client of the command being run."""
    return current().client()


def emit(data: Any, human: Callable[[], None]) -> None:
    """Print ``data`` as JSON with ``-o json``, else call ``human`` to draw it for people."""
    if current().json:
        emit_json(data)
    else:
        human()


# The same options on every command, without environment variables: the root
# command reads those, and an option given after the command overrides it.
_LATE_OPTIONS = [
    inspect.Parameter(
        "output",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            OutputFormat | None,
            typer.Option(
                "--output",
                "-o",
                help="Print tables for people or the API's JSON.",
                rich_help_panel=GLOBAL_PANEL,
                show_default=False,
            ),
        ],
    ),
    inspect.Parameter(
        "url",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--url", help="API URL (default: the saved one).", rich_help_panel=GLOBAL_PANEL
            ),
        ],
    ),
    inspect.Parameter(
        "tenancy",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--tenancy",
                help="Tenancy to act in (default: the saved one).",
                rich_help_panel=GLOBAL_PANEL,
            ),
        ],
    ),
    inspect.Parameter(
        "profile",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--profile", help="Which saved login to use.", rich_help_panel=GLOBAL_PANEL
            ),
        ],
    ),
]


_CTX = inspect.Parameter(
    "_typer_ctx", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=typer.Context
)


def command(group: typer.Typer, name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a command on ``group`` that takes the global options after its name too.

    The command runs with its session as ``current()``; an API refusal it lets escape is
    printed as ``error: ...`` (no traceback) and ends the process with its exit code.
    """

    def register(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        late = [p for p in _LATE_OPTIONS if p.name not in sig.parameters]

        @functools.wraps(fn)
        def run(*args: Any, **kw: Any) -> Any:
            ctx: typer.Context | None = kw.pop(_CTX.name, None)
            session = (ctx.find_object(Session) if ctx is not None else None) or Session()
            for p in late:
                value = kw.pop(p.name, None)
                if value is not None:
                    setattr(session, p.name, value)
            token = _CURRENT.set(session)
            try:
                return fn(*args, **kw)
            except ClientError as exc:
                output.error(exc)
                raise typer.Exit(exit_code_for(exc)) from None
            except KeyboardInterrupt:
                sys.stderr.write("\ninterrupted\n")
                raise typer.Exit(ExitCode.INTERRUPTED) from None
            except (typer.TyperException, typer.Exit, typer.Abort):
                raise
            except Exception as exc:
                if os.environ.get("ECLIPTIC_DEBUG"):
                    traceback.print_exc()
                sys.stderr.write(
                    f"error: unexpected {type(exc).__name__}: {exc}\n"
                    "  (a bug: run with ECLIPTIC_DEBUG=1 to see where)\n"
                )
                raise typer.Exit(ExitCode.REFUSED) from None
            finally:
                _CURRENT.reset(token)
                if ctx is None or ctx.find_object(Session) is not session:
                    session.close()

        run.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[*sig.parameters.values(), *late, _CTX]
        )
        group.command(name, **kwargs)(run)
        return fn

    return register


def delete_many(
    kind: str,
    names: list[str],
    delete: Callable[[str], Any],
    wait_gone: Callable[[Any], None] | None,
) -> None:
    """Delete several objects, carrying on past failures; exit with the first failure's code.

    ``wait_gone`` (given when the user passed ``--wait``) is called for each deleted object.
    """
    from ecliptic.client import ApiError

    deleted: list[Any] = []
    failed: list[ApiError] = []
    for ref in names:
        try:
            deleted.append(delete(ref))
        except ApiError as exc:
            if len(names) == 1:
                raise
            output.error(exc)
            failed.append(exc)
    if wait_gone is not None:
        for obj in deleted:
            wait_gone(obj)

    def human() -> None:
        for obj in deleted:
            output.say(f"{kind} {obj.name}: {'deleted' if wait_gone else 'deleting'}")

    emit(deleted, human)
    if failed:
        raise typer.Exit(exit_code_for(failed[0]))
