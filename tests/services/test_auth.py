"""Passwords, tokens and roles."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from ecliptic.errors import Forbidden, NotFound, Unauthenticated
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
