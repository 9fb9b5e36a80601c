"""Who a sign-in makes or finds, and what memberships it leaves, on SQLite and PostgreSQL;
the group mapping setting; the sealed flow."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ecliptic.config import InvalidSetting, OidcSettings, oidc_settings, parse_oidc_groups
from ecliptic.errors import Unauthenticated
from ecliptic.secretbox import SecretBox
from ecliptic.services import identity
from ecliptic.services.caller import Caller
from ecliptic.services.oidc import (
    Flow,
    SignInExpired,
    StateMismatch,
    groups_of,
    open_flow,
    seal_flow,
    sign_in,
    user_name_from,
)
from ecliptic.store.db import Database
from ecliptic.store.models import Membership, Tenancy, User

SETTINGS = OidcSettings(
    issuer="https://idp.example.org",
    client_id="ecliptic",
    grants=parse_oidc_groups(
        "physics=physics:member,physics-admins=physics:admin,ops=*:admin,astro=astronomy:member"
    ),
)
TTL = timedelta(hours=1)


def roles(db: Database, name: str) -> dict[str, tuple[str, str]]:
    with db.read() as session:
        rows = session.execute(
            select(Tenancy.name, Membership.role, Membership.origin)
            .join(Membership, Membership.tenancy_id == Tenancy.id)
            .join(User, User.id == Membership.user_id)
            .where(User.name == name)
        ).all()
    return {t: (r, o) for t, r, o in rows}


@pytest.fixture
def db(database_url: str) -> Any:
    d = Database(database_url)
    with d.write() as session:
        session.add(User(name="root", is_admin=True))
        session.add_all([Tenancy(name="physics"), Tenancy(name="chemistry")])
    yield d
    d.dispose()


def root(db: Database) -> Caller:
    with db.read() as session:
        u = session.scalar(select(User).where(User.name == "root"))
        assert u is not None
        return Caller(u.id, u.name, True)


def test_groups_give_and_take_memberships_and_the_admin_flag(db: Database) -> None:
    who = {"sub": "s1", "preferred_username": "Zoë", "email": "zoe@uni.example"}
    first = sign_in(db, SETTINGS, {**who, "groups": ["physics", "ops", "astro"]}, TTL)
    assert first.created and first.user_name == "zoe" and first.is_admin
    # 'astronomy' does not exist: nothing is made for it.
    assert first.tenancies == (("physics", "member"),)
    identity.set_membership(db, root(db), "chemistry", "zoe", "admin")

    later = sign_in(db, SETTINGS, {**who, "groups": ["physics-admins", "physics"]}, TTL)
    assert not later.created and not later.is_admin
    assert roles(db, "zoe") == {"physics": ("admin", "oidc"), "chemistry": ("admin", "manual")}

    sign_in(db, SETTINGS, {**who, "groups": []}, TTL)
    assert roles(db, "zoe") == {"chemistry": ("admin", "manual")}


def test_an_administrator_made_by_hand_stays_one(db: Database) -> None:
    sign_in(db, SETTINGS, {"sub": "s2", "preferred_username": "yan"}, TTL)
    with db.write() as session:
        u = session.scalar(select(User).where(User.name == "yan"))
        assert u is not None
        u.is_admin = True
    assert sign_in(db, SETTINGS, {"sub": "s2", "groups": ["physics"]}, TTL).is_admin


def test_a_disabled_user_cannot_sign_in(db: Database) -> None:
    sign_in(db, SETTINGS, {"sub": "s3", "preferred_username": "xi"}, TTL)
    identity.set_user_disabled(db, root(db), "xi", True)
    with pytest.raises(Unauthenticated, match="disabled: ask your administrator"):
        sign_in(db, SETTINGS, {"sub": "s3"}, TTL)


def test_a_name_clash_gets_a_suffix_never_the_other_account(db: Database) -> None:
    identity.create_user(db, None, "wu", "local-password")
    other = sign_in(db, SETTINGS, {"sub": "s4", "preferred_username": "wu"}, TTL)
    again = sign_in(db, SETTINGS, {"sub": "s5", "preferred_username": "WU"}, TTL)
    assert (other.user_name, again.user_name) == ("wu-2", "wu-3")
    # The same subject at another provider is another person.
    elsewhere = OidcSettings(issuer="https://other.example", client_id="c")
    assert sign_in(db, elsewhere, {"sub": "s4", "preferred_username": "wu"}, TTL).created


@pytest.mark.parametrize(
    ("claims", "name"),
    [
        ({"preferred_username": "alice"}, "alice"),
        ({"preferred_username": "Alice.Smith@uni.example"}, "alice-smith"),
        ({"preferred_username": "José Ñúñez"}, "jose-nunez"),
        ({"email": "r2d2@droids.example"}, "r2d2"),
        ({"preferred_username": "--__--"}, "user"),
        ({}, "user"),
        ({"preferred_username": "a" * 100}, "a" * 59),
        (
            {"preferred_username": "0123456789abcdef0123456789abcdef"},
            "u-0123456789abcdef0123456789abcdef",
        ),
    ],
)
def test_user_names_follow_ecliptic_rules(claims: dict[str, Any], name: str) -> None:
    assert user_name_from(claims) == name


def test_groups_claim_forms() -> None:
    assert groups_of({"groups": ["a", 1, "b"]}, "groups") == {"a", "b"}
    assert groups_of({"groups": "a"}, "groups") == {"a"}
    assert groups_of({"realm_access": {"roles": ["ops"]}}, "realm_access.roles") == {"ops"}
    assert groups_of({}, "groups") == frozenset()


@pytest.mark.parametrize(
    "raw",
    ["physics", "physics=physics:owner", "ops=*:member", "x=Physics:member", "=physics:member"],
)
def test_a_bad_group_mapping_is_refused_naming_the_entry(raw: str) -> None:
    with pytest.raises(InvalidSetting) as refused:
        parse_oidc_groups(f"chem=chemistry:member,{raw}")
    assert f"ECLIPTIC_OIDC_GROUPS entry {raw!r}" in str(refused.value)


def test_oidc_settings_are_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECLIPTIC_OIDC_ISSUER", "http://idp.example.org")
    monkeypatch.setenv("ECLIPTIC_OIDC_CLIENT_ID", "ecliptic")
    with pytest.raises(InvalidSetting, match="https://"):
        oidc_settings()
    monkeypatch.delenv("ECLIPTIC_OIDC_CLIENT_ID")
    monkeypatch.setenv("ECLIPTIC_OIDC_ISSUER", "https://idp.example.org/")
    with pytest.raises(InvalidSetting, match="ECLIPTIC_OIDC_CLIENT_ID is not set"):
        oidc_settings()
    monkeypatch.setenv("ECLIPTIC_OIDC_CLIENT_ID", "ecliptic")
    monkeypatch.setenv("ECLIPTIC_OIDC_GROUPS", "physics=physics:member")
    s = oidc_settings()
    assert s is not None and s.issuer == "https://idp.example.org"
    assert s.label == "Sign in with your institution" and s.groups_claim == "groups"
    assert [(g.group, g.tenancy, g.role) for g in s.grants] == [("physics", "physics", "member")]


def test_roles_in_the_mapping_are_ecliptics_roles() -> None:
    from ecliptic.config import OIDC_ROLES

    assert OIDC_ROLES == identity.ROLES


def test_a_flow_opens_only_with_its_key_its_state_and_in_time(tmp_path: Path) -> None:
    box = SecretBox.load(tmp_path / "key")
    now = time.time()
    flow = Flow("st", "no", "ve", "/next", now)
    sealed = seal_flow(box, flow)
    assert open_flow(box, sealed, "st", now=now + 60) == flow
    with pytest.raises(StateMismatch):
        open_flow(box, sealed, "other", now=now)
    with pytest.raises(SignInExpired, match="longer than 10 minutes"):
        open_flow(box, sealed, "st", now=now + 601)
    with pytest.raises(SignInExpired, match="not one this site started"):
        open_flow(SecretBox.load(tmp_path / "another-key"), sealed, "st", now=now)
    with pytest.raises(SignInExpired, match="not one this site started"):
        open_flow(box, sealed[:-4] + "AAAA", "st", now=now)


def test_the_sign_in_button_goes_to_the_provider_and_back_to_a_safe_page() -> None:
    from ecliptic.web.oidc import login_button

    assert login_button(None) == ""
    label = OidcSettings("https://idp.example.org", "c", label="Sign in with <Uni>")
    assert login_button(label, "/servers?a=1") == (
        '<a class="button oidc" href="/login/oidc?next=%2Fservers%3Fa%3D1">'
        "Sign in with &lt;Uni&gt;</a>"
    )
    assert 'href="/login/oidc?next=%2F"' in login_button(label, "https://evil.example")
