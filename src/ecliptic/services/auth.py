"""Passwords (argon2), bearer tokens (random, stored as SHA-256) and who a request is."""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from ecliptic.credentials import API_TOKEN_PREFIX
from ecliptic.errors import NotFound, TooManyAttempts, Unauthenticated
from ecliptic.services.caller import Caller
from ecliptic.store.db import Database
from ecliptic.store.models import ApiToken, Membership, Tenancy, User
from ecliptic.store.types import utcnow

TOKEN_PREFIX = API_TOKEN_PREFIX
FAST_HASH_ENV = "ECLIPTIC_TEST_FAST_PASSWORD_HASH"
"""Set to ``1`` by the test suite only: argon2id with the least work (1 pass over 8 KiB)
instead of the library's defaults (3 passes over 64 MiB), so hundreds of sign-ins take
milliseconds. Nothing else reads it and it has no setting: production always hashes with
the defaults. A hash records its parameters, so either kind verifies anywhere."""


def _make_hasher() -> PasswordHasher:
    if os.environ.get(FAST_HASH_ENV) == "1":
        return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    return PasswordHasher()


_hasher = _make_hasher()
# Verifying against this keeps unknown user names as slow as wrong passwords.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; constant-ish time even without a hash."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def token_digest(token: str) -> str:
    """SHA-256 of a token, the only form in which tokens are stored."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    """A token just created: the only moment its secret is known."""

    id: str
    """Token id (for listing and revoking)."""
    name: str
    """Label."""
    secret: str
    """The bearer token itself."""
    expires_at: datetime | None
    """When it stops working, or None."""


def issue_token(
    session: Session, user: User, name: str, *, ttl: timedelta | None = None
) -> IssuedToken:
    """Create a bearer token for ``user``."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + ttl if ttl else None
    row = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=token_digest(secret),
        prefix=secret[:10],
        expires_at=expires,
    )
    session.add(row)
    session.flush()
    return IssuedToken(row.id, name, secret, expires)


@dataclass
class LoginThrottle:
    """Failed sign-ins, counted in a sliding window: per address and account name, per
    address, and per account name. Past a limit, sign-ins that it covers are refused
    (``TooManyAttempts``, with when to try again) before the password is even looked at,
    until the oldest failure it counted leaves the window. An attempt counts as a failure
    from its start (parallel attempts cannot race the count); a success takes it back and
    clears its address and account's count. Online password guessing is bounded at
    ``per_pair`` tries per window from one address and ``per_account`` for one account from
    everywhere (so a third party can delay an account's sign-in only with that many
    failures per window), and one address cannot spray many accounts (``per_address``).

    Kept in memory, per process: each replica counts its own (a restart forgets)."""

    per_pair: int = 5
    per_address: int = 50
    per_account: int = 100
    window_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    max_keys: int = 100_000
    """Bound on what is remembered: past it, expired entries are dropped, then the oldest."""
    _failures: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _keys(self, address: str, account: str) -> list[tuple[tuple[str, str], int, str]]:
        return [
            (("pair", f"{address}|{account}"), self.per_pair, "for this account from your address"),
            (("address", address), self.per_address, "from your address"),
            (("account", account), self.per_account, "for this account"),
        ]

    def attempt(self, address: str, account: str) -> float:
        """Take one attempt: refuse it (``TooManyAttempts``) if a limit covering it is
        reached, else count it as a failure at once, so parallel attempts cannot all pass
        the check before any of them is counted; ``succeeded`` takes it back. Returns the
        attempt's time, which ``succeeded`` needs."""
        now = self.clock()
        with self._lock:
            for key, limit, where in self._keys(address, account):
                times = self._failures.get(key)
                if times is None:
                    continue
                while times and times[0] <= now - self.window_s:
                    times.popleft()
                if len(times) >= limit:
                    wait = max(1, math.ceil(times[0] + self.window_s - now))
                    raise TooManyAttempts(
                        f"too many failed sign-ins {where}: try again in {wait} s",
                        retry_after_s=wait,
                    )
            if len(self._failures) >= self.max_keys:
                self._forget(now)
            for key, limit, _ in self._keys(address, account):
                self._failures.setdefault(key, deque(maxlen=limit)).append(now)
        return now

    def succeeded(self, address: str, account: str, at: float) -> None:
        """The attempt taken at ``at`` signed in: it was no failure, and the address's
        earlier failures for this account are forgotten."""
        with self._lock:
            self._failures.pop(("pair", f"{address}|{account}"), None)
            for key in (("address", address), ("account", account)):
                times = self._failures.get(key)
                if times is not None and at in times:
                    times.remove(at)

    def _forget(self, now: float) -> None:
        for key in [k for k, t in self._failures.items() if not t or t[-1] <= now - self.window_s]:
            del self._failures[key]
        while len(self._failures) >= self.max_keys:
            del self._failures[next(iter(self._failures))]


def login(
    db: Database,
    username: str,
    password: str,
    *,
    token_name: str,
    ttl: timedelta,
    throttle: LoginThrottle | None = None,
    address: str = "",
) -> IssuedToken:
    """Check a user's password and hand out a token. With ``throttle``, failed attempts
    from ``address`` (the client's) are counted and, past its limits, refused unchecked."""
    at = throttle.attempt(address, username) if throttle is not None else 0.0
    with db.write() as session:
        user = session.scalar(select(User).where(User.name == username))
        ok = verify_password(user.password_hash if user else None, password)
        if user is None or not ok or user.disabled:
            raise Unauthenticated("wrong user name or password")
        issued = issue_token(session, user, token_name, ttl=ttl)
    if throttle is not None:
        throttle.succeeded(address, username, at)
    return issued


def authenticate(db: Database, token: str) -> User:
    """The user a bearer token belongs to."""
    if not token.startswith(TOKEN_PREFIX):
        raise Unauthenticated("this is not an Ecliptic token; sign in again with 'ecliptic login'")
    with db.read() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
        now = utcnow()
        if row is None or (row.expires_at is not None and row.expires_at <= now):
            raise Unauthenticated("token unknown or expired; sign in again with 'ecliptic login'")
        if row.user.disabled:
            raise Unauthenticated("this user is disabled")
        stale = row.last_used_at is None or now - row.last_used_at > timedelta(minutes=5)
        user = row.user
        token_id = row.id
    if stale:
        # Coarse on purpose: one write per token per five minutes keeps reads read-only.
        with db.write() as session:
            session.execute(
                update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
            )
    return user


def caller_for(db: Database, user: User, tenancy: str | None) -> Caller:
    """The caller context of ``user`` acting in ``tenancy`` (name or id; None: their only one)."""
    with db.read() as session:
        query = select(Membership).join(Tenancy).where(Membership.user_id == user.id)
        if tenancy:
            query = query.where((Tenancy.name == tenancy) | (Tenancy.id == tenancy))
            member = session.scalar(query)
            if member is None:
                t = session.scalar(
                    select(Tenancy).where((Tenancy.name == tenancy) | (Tenancy.id == tenancy))
                )
                if t is None or not user.is_admin:
                    # The same answer whether it exists or not: never leak other tenancies.
                    raise NotFound(f"you are not a member of a tenancy '{tenancy}'")
                return Caller(user.id, user.name, user.is_admin, t.id, t.name, "admin")
            return Caller(
                user.id,
                user.name,
                user.is_admin,
                member.tenancy_id,
                member.tenancy.name,
                member.role,
            )
        members = list(session.scalars(query.limit(2)))
        if len(members) == 1:
            m = members[0]
            return Caller(user.id, user.name, user.is_admin, m.tenancy_id, m.tenancy.name, m.role)
        return Caller(user.id, user.name, user.is_admin, memberships=len(members))


def token_id(db: Database, token: str) -> str | None:
    """The id of the token whose secret is ``token`` (None: unknown)."""
    with db.read() as session:
        return session.scalar(select(ApiToken.id).where(ApiToken.token_hash == token_digest(token)))


def revoke_browser_token(db: Database, token: str) -> None:
    """Forget a token by its secret (a browser signing out); unknown tokens are ignored."""
    with db.write() as session:
        session.execute(delete(ApiToken).where(ApiToken.token_hash == token_digest(token)))
