"""``ecliptic login``, ``logout``, ``whoami`` and ``ecliptic token``: who you are to the API."""

from __future__ import annotations

import contextlib
import socket
import sys
from typing import Annotated

import typer

from ecliptic.cli import output
from ecliptic.cli.session import client, command, current, emit
from ecliptic.client import (
    DEFAULT_URL,
    ApiError,
    Client,
    Credentials,
    TokenOut,
    WhoAmI,
    credentials_path,
    delete_credentials,
    load_credentials,
    normalize_url,
    save_credentials,
)

app = typer.Typer()
token_app = typer.Typer(help="Your API tokens: for scripts, CI and other machines.")


def show_whoami(me: WhoAmI, url: str) -> None:
    """The signed-in user, for people."""
    output.fields(
        [
            ("user", me.user + (" (administrator)" if me.is_admin else "")),
            ("tenancy", me.tenancy or "none chosen: pass --tenancy"),
            ("role", me.role),
            ("tenancies", ", ".join(me.tenancies)),
            ("api", url),
        ]
    )


@command(
    app,
    "login",
    help="Sign in and save a token, readable by you only, for later commands.\n\n"
    "The token goes to <config dir>/ecliptic/credentials.json (mode 0600; "
    "credentials-PROFILE.json with --profile). A new login revokes the token it replaces.",
)
def login(
    url: Annotated[
        str | None,
        typer.Option("--url", help=f"API URL (default: the saved one, else {DEFAULT_URL})."),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option("--user", "-u", help="User name (default: the saved one, else asked)."),
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from stdin, not a prompt."),
    ] = False,
    tenancy: Annotated[
        str | None,
        typer.Option("--tenancy", help="Tenancy to act in (default: your only one)."),
    ] = None,
) -> None:
    """Sign in and save a token, readable by you only, for later commands."""
    session = current()
    saved = load_credentials(session.profile)
    target = normalize_url(url or session.url or (saved.url if saved else DEFAULT_URL))
    same_api = saved is not None and normalize_url(saved.url) == target
    if user is None and saved is not None and same_api:
        user = saved.user
    if user is None:
        if password_stdin or not sys.stdin.isatty():
            raise typer.BadParameter("give the user name with --user", param_hint="--user")
        user = typer.prompt("User", err=True)
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
        if not password:
            raise typer.BadParameter("stdin held no password", param_hint="--password-stdin")
    else:
        password = typer.prompt(f"Password for {user} at {target}", hide_input=True, err=True)
    tenancy = tenancy or session.tenancy
    with Client(target, tenancy=tenancy) as c:
        token = c.login(user, password, token_name=f"cli@{socket.gethostname()}"[:63])
        try:
            me = c.whoami()
        except ApiError:
            c.tenancy = None  # a tenancy they cannot use: leave no token behind
            with contextlib.suppress(ApiError):
                c.tokens.revoke(token.id)
            raise
    if tenancy is None and me.tenancy is None and len(me.tenancies) > 1:
        output.note(
            f"you belong to several tenancies ({', '.join(me.tenancies)}): pass --tenancy "
            "to commands, or log in again with --tenancy"
        )
    if saved is not None and same_api and saved.token and saved.token_id:
        _revoke_quietly(target, saved.token, saved.token_id)
    path = save_credentials(
        Credentials(
            url=target,
            token=token.secret,
            tenancy=tenancy or me.tenancy,
            user=me.user,
            token_id=token.id,
        ),
        session.profile,
    )

    def human() -> None:
        where = f" in tenancy {me.tenancy}" if me.tenancy else ""
        output.say(f"Signed in to {target} as {me.user}{where}.")
        output.note(f"token saved in {path}")

    emit(me, human)


def _revoke_quietly(url: str, token: str, token_id: str) -> bool:
    try:
        with Client(url, token=token, timeout=5) as c:
            c.tokens.revoke(token_id)
    except ApiError:
        return False
    return True


@command(app, "logout")
def logout() -> None:
    """Revoke the saved token and forget it."""
    session = current()
    saved = load_credentials(session.profile)
    if saved is None:
        output.note("not signed in")
        return
    revoked = bool(saved.token and saved.token_id) and _revoke_quietly(
        saved.url, saved.token or "", saved.token_id or ""
    )
    delete_credentials(session.profile)
    if not revoked:
        output.note(
            f"could not revoke the token at {saved.url}; it stays valid until it expires "
            "(see 'ecliptic token list' on another login)"
        )
    if not session.json:
        output.say(f"Signed out of {saved.url}; removed {credentials_path(session.profile)}.")


@command(app, "whoami")
def whoami() -> None:
    """Show who you are signed in as, and the tenancy commands act in."""
    c = client()
    me = c.whoami()
    emit(me, lambda: show_whoami(me, c.url))


TOKEN_COLUMNS = ["ID", "NAME", "PREFIX", "EXPIRES", "LAST USED", ""]


def _token_rows(tokens: list[TokenOut], mine: str | None) -> list[list[object]]:
    return [
        [
            t.id,
            t.name,
            t.prefix,
            output.when(t.expires_at) if t.expires_at else "never",
            output.when(t.last_used_at) if t.last_used_at else "",
            "(this one)" if mine and t.prefix and mine.startswith(t.prefix) else "",
        ]
        for t in tokens
    ]


@command(token_app, "list")
def token_list() -> None:
    """List your tokens (never their secrets)."""
    c = client()
    tokens = c.tokens.list()
    emit(
        tokens,
        lambda: output.table(TOKEN_COLUMNS, _token_rows(tokens, c.token), empty="no tokens"),
    )


@command(token_app, "create")
def token_create(
    name: Annotated[str, typer.Argument(help="A label, e.g. 'ci'.", show_default=False)],
    ttl_hours: Annotated[
        int | None,
        typer.Option("--ttl-hours", min=1, help="Hours until it expires (default: never)."),
    ] = None,
) -> None:
    """Create a token; its secret is shown this once."""
    t = client().tokens.create(name, ttl_hours)

    def human() -> None:
        output.fields(
            [
                ("id", t.id),
                ("name", t.name),
                ("expires", output.when(t.expires_at) if t.expires_at else "never"),
                ("secret", t.secret),
            ]
        )
        output.note("the secret is shown only now: use it as ECLIPTIC_TOKEN")

    emit(t, human)


@command(token_app, "revoke")
def token_revoke(
    ids: Annotated[list[str], typer.Argument(metavar="ID", help="Token ids.", show_default=False)],
) -> None:
    """Revoke tokens."""
    c = client()
    for token_id in ids:
        c.tokens.revoke(token_id)
        if not current().json:
            output.say(f"token {token_id}: revoked")
