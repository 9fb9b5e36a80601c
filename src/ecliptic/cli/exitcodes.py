"""Exit codes of ``ecliptic``, stable so that scripts can rely on them.

====  =====================================================================
code  meaning
====  =====================================================================
0     success
1     the API refused the request (a 4xx not listed below: invalid input,
      422) or the local configuration is unusable; ``lease find`` found no
      window within its horizon
2     usage error: unknown option, missing argument (Click's own code)
3     not found (404)
4     conflict (409): a name taken, no capacity (``no_capacity``), still in
      use (``in_use``), not ready
5     not signed in, token unknown or expired (401), or not allowed (403),
      including too few credits for a lease (``insufficient_credits``)
6     the API cannot be reached, timed out, or failed (5xx)
7     a wait timed out, or the object went to ERROR
130   interrupted (Ctrl-C)
====  =====================================================================

``ecliptic server exec`` exits with the command's own exit code instead (128 + N when
the command was killed by signal N, 124 when it timed out).
"""

from __future__ import annotations

from enum import IntEnum

from ecliptic.client import ApiError, ClientError, WaitError


class ExitCode(IntEnum):
    """Exit codes of the CLI."""

    OK = 0
    REFUSED = 1
    USAGE = 2
    NOT_FOUND = 3
    CONFLICT = 4
    UNAUTHORIZED = 5
    UNAVAILABLE = 6
    WAIT_FAILED = 7
    INTERRUPTED = 130


EPILOG = "\n\n".join(
    [
        "[bold]Exit codes[/bold]",
        "0 ok · 1 refused by the API (4xx, e.g. invalid input; 'lease find': no window) · "
        "2 usage error · 3 not found (404) · 4 conflict (409: name taken, no capacity, in "
        "use) · 5 unauthenticated or forbidden (401/403, e.g. insufficient credits) · "
        "6 unreachable or server error (5xx) · "
        "7 wait timed out or object went to ERROR · 130 interrupted.",
        "'ecliptic server exec' exits with the command's own code.",
    ]
)
"""The same table, for ``ecliptic --help``."""


def exit_code_for(exc: ClientError) -> ExitCode:
    """The exit code that reports ``exc``."""
    if isinstance(exc, WaitError):
        return ExitCode.WAIT_FAILED
    if not isinstance(exc, ApiError):
        return ExitCode.REFUSED
    status = exc.status
    if status == 0 or status >= 500:
        return ExitCode.UNAVAILABLE
    if status == 404:
        return ExitCode.NOT_FOUND
    if status == 409:
        return ExitCode.CONFLICT
    if status in (401, 403):
        return ExitCode.UNAUTHORIZED
    return ExitCode.REFUSED


def exec_exit_code(code: int) -> int:
    """A command's exit status as a process exit code (signals as 128 + N)."""
    if code < 0:
        return 128 + min(-code, 127)
    return min(code, 255)
