"""Tenancies, users, memberships and tokens: who exists and who may act where."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ecliptic.errors import Conflict, Forbidden, InvalidInput, NotFound
from ecliptic.services.auth import IssuedToken, hash_password, issue_token
from ecliptic.services.caller import Caller
from ecliptic.store.db import Database
from ecliptic.store.models import (
    ApiToken,
    GatewayCode,
    Membership,
    OidcLink,
    Platform,
    PlatformAccess,
    Service,
    ServiceAccess,
    Tenancy,
    User,
    UserSshKey,
)

ROLES = ("member", "admin")


def find_tenancy(session: Session, ref: str) -> Tenancy:
    """A tenancy by name or id; NotFound names what was asked for."""
    t = session.scalar(select(Tenancy).where((Tenancy.name == ref) | (Tenancy.id == ref)))
    if t is None:
        raise NotFound(f"no tenancy '{ref}'")
    return t


def _user(session: Session, ref: str) -> User:
    u = session.scalar(select(User).where((User.name == ref) | (User.id == ref)))
    if u is None:
        raise NotFound(f"no user '{ref}'")
    return u


def list_tenancies(db: Database, caller: Caller) -> list[Tenancy]:
    """Tenancies the caller belongs to (all of them for an administrator)."""
    with db.read() as session:
        query = select(Tenancy).order_by(Tenancy.name)
        if not caller.is_admin:
            query = query.join(Membership).where(Membership.user_id == caller.user_id)
        return list(session.scalars(query))


def my_tenancies(db: Database, caller: Caller) -> list[Tenancy]:
    """Tenancies the caller is a member of."""
    with db.read() as session:
        return list(
            session.scalars(
                select(Tenancy)
                .join(Membership)
                .where(Membership.user_id == caller.user_id)
                .order_by(Tenancy.name)
            )
        )


def create_tenancy(db: Database, caller: Caller, name: str, description: str = "") -> Tenancy:
    """Create a tenancy (administrators only)."""
    caller.require_admin("create tenancies")
    try:
        with db.write() as session:
            t = Tenancy(name=name, description=description)
            session.add(t)
            session.flush()
            return t
    except IntegrityError:
        raise Conflict(f"a tenancy named '{name}' exists already; pick another name") from None


def delete_tenancy(db: Database, caller: Caller, ref: str) -> None:
    """Delete an empty tenancy (administrators only)."""
    caller.require_admin("delete tenancies")
    from ecliptic.store.models import Network, Server

    with db.write() as session:
        t = find_tenancy(session, ref)
        servers = session.scalar(select(func.count()).where(Server.tenancy_id == t.id)) or 0
        networks = session.scalar(select(func.count()).where(Network.tenancy_id == t.id)) or 0
        if servers or networks:
            raise Conflict(
                f"tenancy '{t.name}' still has {servers} server(s) and {networks} network(s); "
                "delete them first"
            )
        session.execute(delete(Membership).where(Membership.tenancy_id == t.id))
        session.delete(t)


def first_administrator(session: Session, password: str) -> tuple[User, Tenancy] | None:
    """On a store with no user yet: the administrator ``admin`` and their tenancy
    ``default`` (inside the caller's transaction); None when users exist already."""
    if session.scalar(select(func.count()).select_from(User)):
        return None
    admin = User(name="admin", password_hash=hash_password(password), is_admin=True)
    tenancy = Tenancy(name="default", description="created on first start")
    session.add_all([admin, tenancy])
    session.flush()
    session.add(Membership(tenancy_id=tenancy.id, user_id=admin.id, role="admin"))
    return admin, tenancy


def list_users(db: Database, caller: Caller) -> list[User]:
    """Every user (administrators only)."""
    caller.require_admin("list users")
    with db.read() as session:
        return list(session.scalars(select(User).order_by(User.name)))


def create_user(
    db: Database,
    caller: Caller | None,
    name: str,
    password: str | None,
    *,
    email: str = "",
    is_admin: bool = False,
) -> User:
    """Create a user (administrators only; ``caller`` None for bootstrap)."""
    if caller is not None:
        caller.require_admin("create users")
    try:
        with db.write() as session:
            u = User(
                name=name,
                email=email,
                password_hash=hash_password(password) if password else None,
                is_admin=is_admin,
            )
            session.add(u)
            session.flush()
            return u
    except IntegrityError:
        raise Conflict(f"a user named '{name}' exists already; pick another name") from None


def list_members(db: Database, caller: Caller, tenancy: str) -> list[Membership]:
    """Members of a tenancy (its members and administrators may look)."""
    with db.read() as session:
        t = find_tenancy(session, tenancy)
        members = list(
            session.scalars(
                select(Membership).where(Membership.tenancy_id == t.id).order_by(Membership.id)
            )
        )
        if not caller.is_admin and caller.user_id not in {m.user_id for m in members}:
            raise NotFound(f"you are not a member of a tenancy '{tenancy}'")
        return members


def set_membership(db: Database, caller: Caller, tenancy: str, user: str, role: str) -> Membership:
    """Add a user to a tenancy or change their role (cloud or tenancy administrators)."""
    with db.write() as session:
        t = find_tenancy(session, tenancy)
        _may_manage(session, caller, t)
        u = _user(session, user)
        m = session.scalar(
            select(Membership).where(Membership.tenancy_id == t.id, Membership.user_id == u.id)
        )
        if m is None:
            m = Membership(tenancy_id=t.id, user_id=u.id, role=role, origin="manual")
            session.add(m)
        else:
            m.role = role
            # Set by hand from now on: signing in with OpenID Connect no longer changes it.
            m.origin = "manual"
        session.flush()
        session.refresh(m)
        return m


def remove_membership(db: Database, caller: Caller, tenancy: str, user: str) -> None:
    """Remove a user from a tenancy."""
    with db.write() as session:
        t = find_tenancy(session, tenancy)
        _may_manage(session, caller, t)
        u = _user(session, user)
        if not leave_tenancy(session, t.id, u.id):
            raise NotFound(f"user '{u.name}' is not a member of tenancy '{t.name}'")


def leave_tenancy(session: Session, tenancy_id: str, user_id: str) -> bool:
    """End a membership (inside the caller's transaction); False when there was none."""
    gone = session.execute(
        delete(Membership).where(Membership.tenancy_id == tenancy_id, Membership.user_id == user_id)
    ).rowcount  # type: ignore[attr-defined]
    if not gone:
        return False
    # Who leaves a tenancy leaves the access lists of its services and platforms too
    # (a platform's servers get the new list at their next look).
    services = select(Service.id).where(Service.tenancy_id == tenancy_id)
    session.execute(
        delete(ServiceAccess).where(
            ServiceAccess.user_id == user_id, ServiceAccess.service_id.in_(services)
        )
    )
    platforms = list(session.scalars(select(Platform.id).where(Platform.tenancy_id == tenancy_id)))
    session.execute(
        delete(PlatformAccess).where(
            PlatformAccess.user_id == user_id, PlatformAccess.platform_id.in_(platforms)
        )
    )
    return True


def members_named(
    session: Session, tenancy_id: str, names: Iterable[str], whose: str
) -> list[User]:
    """The members of the tenancy with these names, for an access list (``whose``: "the
    service's", "a platform's"). A name that is not a member is refused with the same words
    whether or not such a user exists elsewhere (no enumeration of the instance's users, no
    access lists reaching across tenancies)."""
    wanted = set(names)
    users = list(
        session.scalars(
            select(User)
            .join(Membership, Membership.user_id == User.id)
            .where(User.name.in_(wanted), Membership.tenancy_id == tenancy_id)
        )
    )
    missing = sorted(wanted - {u.name for u in users})
    if missing:
        raise InvalidInput(
            f"not a member of this tenancy: {', '.join(missing)} ({whose} access list names "
            "members of its tenancy; 'ecliptic tenancy members' lists them)"
        )
    return users


def _may_manage(session: Session, caller: Caller, t: Tenancy) -> None:
    if caller.is_admin:
        return
    mine = session.scalar(
        select(Membership).where(
            Membership.tenancy_id == t.id, Membership.user_id == caller.user_id
        )
    )
    if mine is None:
        raise NotFound(f"you are not a member of a tenancy '{t.name}'")
    if mine.role != "admin":
        raise Forbidden(f"only admins of tenancy '{t.name}' may change its members")


def set_user_disabled(db: Database, caller: Caller, ref: str, disabled: bool) -> User:
    """Disable a user (every token and gateway session of theirs stops working at once, and
    the jump host refuses their keys) or enable them again (administrators only)."""
    caller.require_admin("disable or enable users")
    with db.write() as session:
        u = _user(session, ref)
        if disabled and u.id == caller.user_id:
            raise Conflict("you cannot disable yourself: ask another administrator")
        if disabled and u.is_admin:
            _keep_an_admin(session, u)
        u.disabled = disabled
        if disabled:
            _end_sessions(session, u)
        session.flush()
        return u


def delete_user(db: Database, caller: Caller, ref: str) -> None:
    """Remove a user: their memberships, tokens, gateway sessions, SSH keys and places on
    services' access lists go with them (administrators only). What they created stays with
    its tenancy."""
    caller.require_admin("remove users")
    with db.write() as session:
        u = _user(session, ref)
        if u.id == caller.user_id:
            raise Conflict("you cannot remove yourself: ask another administrator")
        if u.is_admin:
            _keep_an_admin(session, u)
        _end_sessions(session, u)
        for model in (Membership, UserSshKey, ServiceAccess, OidcLink):
            session.execute(delete(model).where(model.user_id == u.id))
        session.delete(u)


def _keep_an_admin(session: Session, leaving: User) -> None:
    others = session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.is_admin.is_(True), User.disabled.is_(False), User.id != leaving.id)
    )
    if not others:
        raise Conflict(
            f"'{leaving.name}' is the last enabled administrator: make another one first"
        )


def _end_sessions(session: Session, u: User) -> None:
    """Revoke every token (API, CLI, browser and gateway sign-ins) and sign-in code."""
    session.execute(delete(ApiToken).where(ApiToken.user_id == u.id))
    session.execute(delete(GatewayCode).where(GatewayCode.user_id == u.id))


def create_token(db: Database, caller: Caller, name: str, ttl: timedelta | None) -> IssuedToken:
    """A new token for the caller."""
    with db.write() as session:
        return issue_token(session, _user(session, caller.user_id), name, ttl=ttl)


def list_tokens(db: Database, caller: Caller) -> list[ApiToken]:
    """The caller's tokens (never their secrets)."""
    with db.read() as session:
        return list(
            session.scalars(
                select(ApiToken)
                .where(ApiToken.user_id == caller.user_id)
                .order_by(ApiToken.created_at)
            )
        )


def revoke_token(db: Database, caller: Caller, token_id: str) -> None:
    """Revoke one of the caller's tokens."""
    with db.write() as session:
        gone = session.execute(
            delete(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == caller.user_id)
        ).rowcount  # type: ignore[attr-defined]
        if not gone:
            raise NotFound(f"you have no token '{token_id}'")
