"""Passwords, tokens and roles."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from ecliptic.errors import Forbidden, NotFound, TooManyAttempts, Unauthenticated
from ecliptic.services import auth, identity
from ecliptic.store.models import ApiToken, User
from tests.services.conftest import Env


def test_passwords_are_argon2_hashed(env: Env) -> None:
    with env.db.read() as s:
        u = s.scalar(select(User).where(User.name == "alice"))
    assert u is not None and u.password_hash is not None
    assert u.password_hash.startswith("$argon2id$") and "alice-password" not in u.password_hash


def test_login_issues_a_token_stored_only_as_a_hash(env: Env) -> None:
    t = auth.login(env.db, "alice", "alice-password", token_name="cli", ttl=timedelta(hours=1))
    with env.db.read() as s:
        row = s.scalar(select(ApiToken).where(ApiToken.id == t.id))
    assert row is not None and row.token_hash == auth.token_digest(t.secret)
    assert t.secret not in (row.token_hash, row.prefix)
    assert auth.authenticate(env.db, t.secret).name == "alice"


@pytest.mark.parametrize(("user", "password"), [("alice", "wrong"), ("nobody", "x")])
def test_bad_credentials_say_the_same_thing(env: Env, user: str, password: str) -> None:
    with pytest.raises(Unauthenticated, match="wrong user name or password"):
        auth.login(env.db, user, password, token_name="cli", ttl=timedelta(hours=1))


def test_expired_and_revoked_tokens_are_refused(env: Env) -> None:
    t = auth.login(env.db, "alice", "alice-password", token_name="cli", ttl=timedelta(hours=1))
    with env.db.write() as s:
        row = s.get(ApiToken, t.id)
        assert row is not None
        row.expires_at = row.created_at - timedelta(seconds=1)
    with pytest.raises(Unauthenticated, match="expired"):
        auth.authenticate(env.db, t.secret)
    t2 = identity.create_token(env.db, env.alice, "other", None)
    identity.revoke_token(env.db, env.alice, t2.id)
    with pytest.raises(Unauthenticated):
        auth.authenticate(env.db, t2.secret)


def test_tenancy_scope(env: Env) -> None:
    with env.db.read() as s:
        alice = s.scalar(select(User).where(User.name == "alice"))
    assert alice is not None
    assert auth.caller_for(env.db, alice, None).tenancy_name == "physics"
    with pytest.raises(NotFound, match="not a member"):
        auth.caller_for(env.db, alice, "chemistry")
    with pytest.raises(NotFound, match="not a member"):
        auth.caller_for(env.db, alice, "does-not-exist")


def test_roles(env: Env) -> None:
    with pytest.raises(Forbidden):
        identity.create_tenancy(env.db, env.alice, "mine")
    with pytest.raises(Forbidden, match="only admins of tenancy 'physics'"):
        identity.set_membership(env.db, env.alice, "physics", "bob", "member")
    # bob administers chemistry, so he may add alice to it.
    m = identity.set_membership(env.db, env.bob, "chemistry", "alice", "member")
    assert m.role == "member"


def test_passwords_hash_with_argon2_defaults_unless_the_tests_ask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cheap parameters exist for the test suite only; a hash of either kind verifies."""
    from argon2 import PasswordHasher, extract_parameters

    monkeypatch.delenv(auth.FAST_HASH_ENV)
    shipped = auth._make_hasher()
    assert extract_parameters(shipped.hash("x")) == extract_parameters(PasswordHasher().hash("x"))
    monkeypatch.setenv(auth.FAST_HASH_ENV, "1")
    cheap = auth._make_hasher()
    fast = extract_parameters(cheap.hash("x"))
    assert (fast.time_cost, fast.memory_cost) == (1, 8)
    assert shipped.verify(cheap.hash("pw"), "pw") and cheap.verify(shipped.hash("pw"), "pw")


def test_failed_sign_ins_are_throttled_per_address_and_account(env: Env) -> None:
    """The attack's retest: passwords could be guessed as fast as the API answered."""
    now = [1000.0]
    throttle = auth.LoginThrottle(per_pair=3, per_address=5, per_account=7, window_s=60,
                                  clock=lambda: now[0])  # fmt: skip

    def attempt(password: str, address: str = "198.51.100.1", user: str = "alice") -> str:
        try:
            auth.login(env.db, user, password, token_name="t", ttl=timedelta(hours=1),
                       throttle=throttle, address=address)  # fmt: skip
        except TooManyAttempts as exc:
            return f"wait {exc.retry_after_s}"
        except Unauthenticated:
            return "wrong"
        return "ok"

    assert [attempt("guess") for _ in range(3)] == ["wrong"] * 3
    # The right password is refused too, unchecked, until the oldest failure is 60 s old.
    assert attempt("alice-password") == "wait 60"
    now[0] += 30
    assert attempt("guess") == "wait 30"
    # Another address is counted apart (up to the account's limit).
    assert attempt("alice-password", address="198.51.100.2") == "ok"
    now[0] += 30
    assert attempt("alice-password") == "ok"
    # One address spraying many accounts is bounded too.
    spray = [attempt("guess", address="203.0.113.9", user=f"u{i}") for i in range(6)]
    assert spray == ["wrong"] * 5 + ["wait 60"]
    # And one account guessed from many addresses.
    many = [attempt("guess", address=f"192.0.2.{i}") for i in range(8)]
    assert many[:7] == ["wrong"] * 7 and many[7].startswith("wait")
    assert attempt("alice-password", address="192.0.2.200").startswith("wait")
    now[0] += 61
    assert attempt("alice-password", address="192.0.2.200") == "ok"


def test_parallel_guesses_cannot_race_the_throttle(env: Env) -> None:
    """The attack's retest: 60 parallel sign-ins had 44 passwords checked against a limit
    of 5 (the count was checked before the password and raised after it)."""
    throttle = auth.LoginThrottle(per_pair=5)
    start = threading.Barrier(20)
    outcomes: list[str] = []

    def guess() -> None:
        start.wait()
        try:
            auth.login(env.db, "alice", "guess", token_name="t", ttl=timedelta(hours=1),
                       throttle=throttle, address="198.51.100.7")  # fmt: skip
        except TooManyAttempts:
            outcomes.append("throttled")
        except Unauthenticated:
            outcomes.append("checked")

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("checked") == 5 and outcomes.count("throttled") == 15, outcomes
