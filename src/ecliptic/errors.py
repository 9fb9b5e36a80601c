"""The error every layer raises to say "no" to a user: a stable code, a status, a message.

Modules define their own subclasses next to the code that raises them (``NoCapacity``
in placement, ``InUse`` in networks); the REST API renders any of them as
``application/problem+json``.
"""

from __future__ import annotations

from typing import Any


class EclipticError(Exception):
    """A refusal with a stable ``code`` and a message that says what to change."""

    code = "error"
    status = 400
    title = "Bad request"

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []


class InvalidInput(EclipticError):
    """Input that passed the schema but makes no sense (unknown flavor name, bad CIDR)."""

    code = "invalid_input"
    status = 422
    title = "Invalid input"


class NotFound(EclipticError):
    """No such object, or one the caller may not see (never leak which)."""

    code = "not_found"
    status = 404
    title = "Not found"


class Forbidden(EclipticError):
    """The caller is known but their role does not allow this."""

    code = "forbidden"
    status = 403
    title = "Forbidden"


class TooManyAttempts(EclipticError):
    """Too many failed attempts of something guessable (a password): wait and try again."""

    code = "too_many_attempts"
    status = 429
    title = "Too many attempts"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        """Seconds until an attempt is taken again (the ``Retry-After`` header)."""


class Unauthenticated(EclipticError):
    """No valid credentials."""

    code = "unauthenticated"
    status = 401
    title = "Unauthenticated"


class Conflict(EclipticError):
    """The request collides with the current state (a name taken, an object busy)."""

    code = "conflict"
    status = 409
    title = "Conflict"


class TooLarge(EclipticError):
    """A request body over its limit."""

    status = 413
    code = "too_large"
    title = "Too large"
