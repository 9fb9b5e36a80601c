"""``ecliptic tenancy`` and ``ecliptic user``: who exists and who may act where."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from ecliptic.cli import output
from ecliptic.cli.session import client, command, current, emit
from ecliptic.client import MembershipOut, TenancyOut, UserOut

tenancy_app = typer.Typer(help="Tenancies and their members.")
user_app = typer.Typer(help="Users (administrators).")

Tenancy = Annotated[str, typer.Argument(help="Tenancy name or id.", show_default=False)]
User = Annotated[str, typer.Argument(help="User name or id.", show_default=False)]


class Role(StrEnum):
    """Roles in a tenancy."""

    member = "member"
    admin = "admin"


def _tenancy_rows(rows: list[TenancyOut]) -> list[list[object]]:
    return [[t.name, t.description, output.when(t.created_at)] for t in rows]


def _member_rows(rows: list[MembershipOut]) -> list[list[object]]:
    return [[m.tenancy, m.user, m.role] for m in rows]


def _user_rows(rows: list[UserOut]) -> list[list[object]]:
    return [
        [u.name, u.email, "yes" if u.is_admin else "", "yes" if u.disabled else "", u.created_at]
        for u in rows
    ]


@command(tenancy_app, "list")
def tenancy_list() -> None:
    """List tenancies you belong to (all of them, for administrators)."""
    rows = client().tenancies.list()
    emit(
        rows,
        lambda: output.table(
            ["NAME", "DESCRIPTION", "CREATED"], _tenancy_rows(rows), empty="no tenancies"
        ),
    )


@command(tenancy_app, "create")
def tenancy_create(
    name: Annotated[
        str, typer.Argument(help="Name: lowercase letters, digits and '-'.", show_default=False)
    ],
    description: Annotated[str, typer.Option("--description", help="For people.")] = "",
) -> None:
    """Create a tenancy (administrators)."""
    t = client().tenancies.create(name, description)
    emit(t, lambda: output.table(["NAME", "DESCRIPTION", "CREATED"], _tenancy_rows([t])))


@command(tenancy_app, "delete")
def tenancy_delete(tenancy: Tenancy) -> None:
    """Delete an empty tenancy (administrators)."""
    client().tenancies.delete(tenancy)
    if not current().json:
        output.say(f"tenancy {tenancy}: deleted")


@command(tenancy_app, "members")
def tenancy_members(tenancy: Tenancy) -> None:
    """List members of a tenancy and their roles."""
    rows = client().members.list(tenancy)
    emit(
        rows,
        lambda: output.table(["TENANCY", "USER", "ROLE"], _member_rows(rows), empty="no members"),
    )


@command(tenancy_app, "member-add")
def tenancy_member_add(
    tenancy: Tenancy,
    user: User,
    role: Annotated[Role, typer.Option("--role", help="Tenancy admins manage members.")] = (
        Role.member
    ),
) -> None:
    """Add a user to a tenancy, or change their role."""
    m = client().members.set(tenancy, user, role.value)
    emit(m, lambda: output.table(["TENANCY", "USER", "ROLE"], _member_rows([m])))


@command(tenancy_app, "member-remove")
def tenancy_member_remove(tenancy: Tenancy, user: User) -> None:
    """Remove a user from a tenancy."""
    client().members.remove(tenancy, user)
    if not current().json:
        output.say(f"user {user}: removed from tenancy {tenancy}")


@command(user_app, "list")
def user_list() -> None:
    """List every user."""
    rows = client().users.list()
    emit(
        rows,
        lambda: output.table(
            ["NAME", "EMAIL", "ADMIN", "DISABLED", "AGE"], _user_rows(rows), empty="no users"
        ),
    )


@command(user_app, "create")
def user_create(
    name: Annotated[
        str, typer.Argument(help="Name: lowercase letters, digits and '-'.", show_default=False)
    ],
    email: Annotated[str, typer.Option("--email", help="Contact address.")] = "",
    admin: Annotated[bool, typer.Option("--admin", help="A cloud administrator.")] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="No password: the user cannot log in.")
    ] = False,
) -> None:
    """Create a user; asks for their password unless --password-stdin or --no-password."""
    password: str | None = None
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
        if not password:
            raise typer.BadParameter("stdin held no password", param_hint="--password-stdin")
    elif not no_password:
        password = typer.prompt(
            f"Password for {name}", hide_input=True, confirmation_prompt=True, err=True
        )
    u = client().users.create(name, password, email=email or None, is_admin=admin)
    emit(
        u,
        lambda: output.table(["NAME", "EMAIL", "ADMIN", "DISABLED", "AGE"], _user_rows([u])),
    )


def _set_disabled(user: str, disabled: bool) -> None:
    u = client().users.set_disabled(user, disabled)
    emit(
        u,
        lambda: output.say(
            f"user {u.name}: "
            + ("disabled; their tokens and sessions have ended" if disabled else "enabled")
        ),
    )


@command(user_app, "disable")
def user_disable(user: User) -> None:
    """Disable a user: their tokens, browser and gateway sessions stop working at once."""
    _set_disabled(user, True)


@command(user_app, "enable")
def user_enable(user: User) -> None:
    """Enable a disabled user again (they sign in anew)."""
    _set_disabled(user, False)


@command(user_app, "delete")
def user_delete(user: User) -> None:
    """Remove a user, their memberships, tokens, sessions and SSH keys."""
    client().users.delete(user)
    if not current().json:
        output.say(f"user {user}: removed")
