"""The tunnel gateway's registrar and its access decisions.

A *service* is reserved with a random DNS-safe subdomain and gets a single-use, signed,
expiring *association token*. A client exchanges the token once to bind its SSH public key
to the subdomain; from then on any SSH connection that logs in with that key serves the
service. People reach a service at ``<subdomain>.<domain>``: public ones directly, the
others after signing in, and only when they are on the service's access list.

Secrets are never stored in clear: tokens and sign-in codes are kept as SHA-256, and the
session cookies the gateway sets are HMAC-signed with the instance's gateway secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlencode

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ecliptic import hostkeys
from ecliptic.credentials import (
    API_TOKEN_PREFIX,
    GATEWAY_COOKIE,
    PORTAL_COOKIE,
    STATE_COOKIE,
    cookie_name,
)
from ecliptic.errors import (
    Conflict,
    EclipticError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
)
from ecliptic.secretbox import SecretBox, SecretBoxError
from ecliptic.services.auth import authenticate, token_digest
from ecliptic.services.caller import Caller
from ecliptic.services.identity import members_named
from ecliptic.services.sshkeys import parse_public_key
from ecliptic.store.db import Database
from ecliptic.store.models import (
    ApiToken,
    Event,
    GatewayCode,
    GatewayReplica,
    GatewaySession,
    Meta,
    Service,
    ServiceAccess,
    TunnelEndpoint,
    TunnelKey,
    TunnelToken,
    User,
)
from ecliptic.store.transitions import audit
from ecliptic.store.types import utcnow

Protocol = Literal["http", "https", "tcp"]
TOKEN_PREFIX = "ectt_"
COOKIE_NAME = GATEWAY_COOKIE
CODE_TTL = timedelta(seconds=60)
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_SUBDOMAIN = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


CLIENT_SETTINGS = ("protocol", "liveness_path", "liveness_period_s", "read_timeout_s")
"""Service settings a client may give when it exchanges its token."""


class TokenInvalid(EclipticError):
    """An association token that is not one of ours."""

    code = "token_invalid"
    status = 401
    title = "Invalid token"


class TokenUsed(EclipticError):
    """An association token already exchanged."""

    code = "token_used"
    status = 409
    title = "Token already used"


class TokenExpired(EclipticError):
    """An association token past its expiry."""

    code = "token_expired"
    status = 410
    title = "Token expired"


# --- secrets ------------------------------------------------------------------------------


SEALED_SECRETS = ("gateway_secret", "gateway_host_key", "gateway_peer_identity")
"""Rows of ``meta`` that hold the instance's secrets, sealed (see ``ecliptic.secretbox``)."""


def _secret(db: Database, name: str, make: Callable[[], str]) -> str:
    """The secret in row ``name`` of ``meta``, made with ``make`` on first use. Stored
    sealed with the instance's secret key, which is not in the store; a plain value left by
    an older version is sealed in place the first time it is read."""
    box = db.secrets
    if box is None:
        raise RuntimeError(f"{name}: this Database was opened without the secret key")
    with db.read() as session:
        row = session.get(Meta, name)
        stored = row.value if row is not None else None
    if stored is not None and box.is_sealed(stored):
        return box.open(name, stored)
    with db.write() as session:
        row = session.get(Meta, name)
        if row is None:
            plain = make()
            session.add(Meta(key=name, value=box.seal(name, plain)))
            return plain
        if box.is_sealed(row.value):
            return box.open(name, row.value)
        plain = row.value
        row.value = box.seal(name, plain)
        return plain


def reseal_secrets(db: Database, box: SecretBox) -> int:
    """Seal every secret again with ``box``'s current key (after a key rotation); opens
    them with whichever of ``db.secrets``' or ``box``'s keys sealed them. Returns how many."""
    old = db.secrets
    done = 0
    with db.write() as session:
        for name in SEALED_SECRETS:
            row = session.get(Meta, name)
            if row is None:
                continue
            if SecretBox.is_sealed(row.value):
                try:
                    plain = box.open(name, row.value)
                except SecretBoxError:
                    if old is None:
                        raise
                    plain = old.open(name, row.value)
            else:
                plain = row.value
            row.value = box.seal(name, plain)
            done += 1
    return done


def sealing_keys(db: Database) -> dict[str, str]:
    """Which key id sealed each secret in the store ("" for one still plain)."""
    with db.read() as session:
        rows = {name: session.get(Meta, name) for name in SEALED_SECRETS}
    return {
        name: SecretBox.key_id_of(row.value) if SecretBox.is_sealed(row.value) else ""
        for name, row in rows.items()
        if row is not None
    }


def gateway_secret(db: Database) -> bytes:
    """The instance's HMAC key for tokens and cookies, created on first use."""
    return bytes.fromhex(_secret(db, "gateway_secret", lambda: secrets.token_hex(32)))


def host_key(db: Database) -> tuple[str, str]:
    """The gateway's SSH host key, shared by every replica: (private key PEM, public line).

    Created on first use. Clients pin the public line, so every replica must present it.
    """
    pem = _secret(db, "gateway_host_key", hostkeys.new_private_key)
    return pem, hostkeys.public_line(pem)


PEER_GRANT_TTL_S = 30
"""Seconds a per-hop grant to a peer's TCP relay is valid (clocks of replicas must agree to
within this)."""


def peer_identity(db: Database) -> tuple[str, str]:
    """The certificate and private key (PEM) replicas present to each other on their peer
    listeners, and the only certificate they accept there. Created on first use, shared by
    every replica through the store; see ``hostkeys.new_peer_identity``."""

    def make() -> str:
        cert, key = hostkeys.new_peer_identity()
        return cert + key

    return hostkeys.split_identity(_secret(db, "gateway_peer_identity", make))


def _grant_key(db: Database) -> bytes:
    return hmac.new(gateway_secret(db), b"ecliptic-gateway-peer-grant/1", hashlib.sha256).digest()


def mint_peer_grant(db: Database, user_id: str, service_id: str, now: float | None = None) -> str:
    """A grant for one hop to a peer's TCP relay: ``user.service.expiry.mac``, valid
    ``PEER_GRANT_TTL_S``. The receiving replica checks it and the user's access again."""
    expires = int((time.time() if now is None else now) + PEER_GRANT_TTL_S)
    payload = f"{user_id}.{service_id}.{expires}"
    return f"{payload}.{_mac(_grant_key(db), payload)}"


def check_peer_grant(
    db: Database, grant: str, service_id: str, now: float | None = None
) -> str | None:
    """The user a grant names, if it is genuine, unexpired, for ``service_id``, and the user
    (enabled) may still reach the service (public, or on its access list); else None."""
    parts = grant.split(".")
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    user_id, granted_service, expires, mac = parts
    payload = f"{user_id}.{granted_service}.{expires}"
    if not hmac.compare_digest(mac, _mac(_grant_key(db), payload)):
        return None
    current = time.time() if now is None else now
    if granted_service != service_id or not current <= int(expires) <= current + PEER_GRANT_TTL_S:
        return None
    with db.read() as session:
        service = session.get(Service, service_id)
        user = session.get(User, user_id)
        if service is None or user is None or user.disabled:
            return None
        if not service.public and session.get(ServiceAccess, (service_id, user_id)) is None:
            return None
    return user_id


def tunnels_elsewhere(db: Database, tenancy_id: str, gateway_id: str) -> dict[str, int]:
    """Tunnels of a tenancy that replicas other than ``gateway_id`` report as connected, by
    the name of their service's owner (``""``: an owner who is gone)."""
    with db.read() as session:
        rows = session.execute(
            select(User.name, func.count())
            .select_from(TunnelEndpoint)
            .join(Service, Service.id == TunnelEndpoint.service_id)
            .outerjoin(User, User.id == Service.created_by)
            .where(Service.tenancy_id == tenancy_id, TunnelEndpoint.gateway_id != gateway_id)
            .group_by(User.name)
        )
        return {name or "": int(count) for name, count in rows}


def tunnel_refused(db: Database, service_id: str, reason: str) -> None:
    """Record on the service that a tunnel was refused, and why (``service events``)."""
    with db.write() as session:
        service = session.get(Service, service_id)
        if service is not None:
            audit(session, service, reason)


SESSION_CREDENTIAL = "session:"
"""Prefix of a credential reference naming a service session (its id, not the cookie)."""
TOKEN_CREDENTIAL = "token:"
"""Prefix of a credential reference naming an API token (its hash, not the token)."""


def still_allowed(db: Database, held: set[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    """Of ``(service id, user name, credential)`` triples (an empty name: nobody signed in;
    the credential as ``Decision.credential`` names it), those whose service still exists
    and is public, or whose user is enabled and on its access list and whose credential
    still holds (the service session not ended by a sign-out, the API token not deleted,
    neither expired)."""
    if not held:
        return set()
    service_ids = {s for s, _, _ in held}
    names = {u for _, u, _ in held if u}
    credentials = {c for _, _, c in held}
    session_ids = {
        c[len(SESSION_CREDENTIAL) :] for c in credentials if c.startswith(SESSION_CREDENTIAL)
    }
    token_hashes = {
        c[len(TOKEN_CREDENTIAL) :] for c in credentials if c.startswith(TOKEN_CREDENTIAL)
    }
    now = utcnow()
    with db.read() as session:
        public = dict(
            session.execute(
                select(Service.id, Service.public).where(Service.id.in_(service_ids))
            ).all()
        )
        users = dict(
            session.execute(
                select(User.name, User.id).where(User.name.in_(names), User.disabled.is_(False))
            ).all()
        )
        access = set(
            session.execute(
                select(ServiceAccess.service_id, ServiceAccess.user_id).where(
                    ServiceAccess.service_id.in_(service_ids),
                    ServiceAccess.user_id.in_(users.values()),
                )
            ).all()
        )
        live = {
            SESSION_CREDENTIAL + i
            for i in session.scalars(
                select(GatewaySession.id).where(
                    GatewaySession.id.in_(session_ids), GatewaySession.expires_at > now
                )
            )
        } | {
            TOKEN_CREDENTIAL + h
            for h in session.scalars(
                select(ApiToken.token_hash).where(
                    ApiToken.token_hash.in_(token_hashes),
                    (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > now),
                )
            )
        }
    return {
        (s, u, c)
        for s, u, c in held
        if s in public and (public[s] or (u in users and (s, users[u]) in access and c in live))
    }


def _mac(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:20]).decode().rstrip("=")


# --- registrar ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceConfig:
    """How the gateway reaches a service through its tunnels."""

    protocol: Protocol = "http"
    """``http`` or ``https`` behind the tunnel (routed by Host), or ``tcp`` (jump host)."""
    liveness_path: str | None = None
    """Path probed through each tunnel; a failing tunnel leaves routing until it recovers."""
    liveness_period_s: int = 10
    """Seconds between probes."""
    read_timeout_s: int = 3600
    """Longest wait for the service to send something."""


@dataclass(frozen=True)
class IssuedTunnelToken:
    """An association token just made: the only moment its secret is known."""

    service_id: str
    """Service it binds a key to."""
    secret: str
    """The token itself."""
    expires_at: datetime
    """Until when it may be exchanged."""


def new_subdomain() -> str:
    """A random DNS label: a letter then 11 letters or digits (about 57 bits)."""
    return secrets.choice(_ALPHABET[:26]) + "".join(secrets.choice(_ALPHABET) for _ in range(11))


def _issue_token(
    session: Session, secret: bytes, service: Service, ttl: timedelta
) -> IssuedTunnelToken:
    expires = utcnow() + ttl
    payload = f"{service.id}.{int(expires.timestamp())}.{secrets.token_urlsafe(18)}"
    token = f"{TOKEN_PREFIX}{payload}.{_mac(secret, payload)}"
    session.add(
        TunnelToken(service_id=service.id, token_hash=token_digest(token), expires_at=expires)
    )
    return IssuedTunnelToken(service.id, token, expires)


def _users_by_name(session: Session, names: list[str], tenancy_id: str) -> list[User]:
    return members_named(session, tenancy_id, names, "the service's")


def _own_service(session: Session, caller: Caller, ref: str) -> Service:
    tenancy = caller.require_tenancy()
    row = session.scalar(
        select(Service).where(
            Service.tenancy_id == tenancy, (Service.id == ref) | (Service.name == ref)
        )
    )
    if row is None:
        raise NotFound(f"no service '{ref}' in tenancy '{caller.tenancy_name}'")
    return row


def _managed_service(session: Session, caller: Caller, ref: str, what: str) -> Service:
    """A service of the caller's tenancy that the caller may change: its owner (who
    created it), the tenancy's admins and site administrators only."""
    service = _own_service(session, caller, ref)
    if caller.is_admin or caller.role == "admin" or service.created_by == caller.user_id:
        return service
    owner = session.get(User, service.created_by) if service.created_by else None
    raise Forbidden(
        f"only the owner of service '{service.name}' "
        f"({owner.name if owner else 'gone'}) or an admin of tenancy "
        f"'{caller.tenancy_name}' may {what}"
    )


def create_service(
    db: Database,
    caller: Caller,
    *,
    name: str,
    public: bool = False,
    config: ServiceConfig = ServiceConfig(),
    access: list[str] | None = None,
    token_ttl: timedelta,
    max_services: int = 100,
) -> tuple[Service, IssuedTunnelToken]:
    """Reserve a subdomain for a new service and issue its first association token.

    The access list defaults to the caller alone.
    """
    tenancy = caller.require_tenancy()
    secret = gateway_secret(db)
    with db.write() as session:
        if session.scalar(
            select(Service.id).where(Service.tenancy_id == tenancy, Service.name == name)
        ):
            raise Conflict(f"a service named '{name}' exists in this tenancy: pick another name")
        count = session.scalar(
            select(func.count()).select_from(Service).where(Service.tenancy_id == tenancy)
        )
        if (count or 0) >= max_services:
            raise Conflict(
                f"tenancy '{caller.tenancy_name}' has {count} services, its limit: delete "
                "one ('ecliptic service delete NAME'), or ask an administrator to raise "
                "ECLIPTIC_GATEWAY_MAX_SERVICES"
            )
        users = _users_by_name(session, access, tenancy) if access is not None else []
        service = Service(
            tenancy_id=tenancy,
            name=name,
            subdomain=new_subdomain(),
            public=public,
            protocol=config.protocol,
            liveness_path=config.liveness_path,
            liveness_period_s=config.liveness_period_s,
            read_timeout_s=config.read_timeout_s,
            created_by=caller.user_id,
        )
        user_ids = [u.id for u in users] if access is not None else [caller.user_id]
        service.access = [ServiceAccess(user_id=uid) for uid in user_ids]
        session.add(service)
        session.flush()
        audit(session, service, f"created by {caller.user_name}; first token issued")
        issued = _issue_token(session, secret, service, token_ttl)
        session.flush()
        session.refresh(service)
        session.expunge_all()
    return service, issued


def issue_token(db: Database, caller: Caller, ref: str, ttl: timedelta) -> IssuedTunnelToken:
    """Another association token for a service (to bind one more client)."""
    secret = gateway_secret(db)
    with db.write() as session:
        service = _managed_service(session, caller, ref, "issue tokens for it")
        audit(session, service, f"token issued by {caller.user_name}")
        return _issue_token(session, secret, service, ttl)


def list_services(db: Database, caller: Caller) -> list[Service]:
    """Services of the caller's tenancy, by name."""
    tenancy = caller.require_tenancy()
    with db.read() as session:
        rows = list(
            session.scalars(
                select(Service).where(Service.tenancy_id == tenancy).order_by(Service.name)
            )
        )
        session.expunge_all()
        return rows


SILENT_REPLICA = timedelta(seconds=15)
"""A replica whose heartbeat (every second) is older than this is shown as serving nothing:
its tunnels count as unhealthy in ``show_service`` (generous, for clocks that disagree)."""


@dataclass(frozen=True)
class ServiceDetail:
    """A service with its access list, bound keys and live tunnels."""

    service: Service
    """The service."""
    access: list[str]
    """Names of users allowed in (signed-in services)."""
    keys: list[TunnelKey]
    """Keys bound to it (revoked ones included)."""
    tunnels: list[TunnelEndpoint]
    """Tunnels connected now, as the gateway replicas reported them."""


def show_service(db: Database, caller: Caller, ref: str) -> ServiceDetail:
    """One service of the caller's tenancy, with its keys, access list and tunnels."""
    with db.read() as session:
        service = _own_service(session, caller, ref)
        names = list(
            session.scalars(
                select(User.name)
                .join(ServiceAccess, ServiceAccess.user_id == User.id)
                .where(ServiceAccess.service_id == service.id)
                .order_by(User.name)
            )
        )
        keys = list(
            session.scalars(
                select(TunnelKey)
                .where(TunnelKey.service_id == service.id)
                .order_by(TunnelKey.created_at)
            )
        )
        rows = session.execute(
            select(TunnelEndpoint, GatewayReplica.heartbeat_at)
            .outerjoin(GatewayReplica, GatewayReplica.id == TunnelEndpoint.gateway_id)
            .where(TunnelEndpoint.service_id == service.id)
            .order_by(TunnelEndpoint.connected_at)
        ).all()
        session.expunge_all()
    # A replica that stopped beating (killed, hung) serves nothing, whatever it last wrote.
    silent_since = utcnow() - SILENT_REPLICA
    tunnels = []
    for tunnel, heartbeat in rows:
        if heartbeat is None or heartbeat < silent_since:
            tunnel.healthy = False
        tunnels.append(tunnel)
    return ServiceDetail(service, names, keys, tunnels)


def service_events(db: Database, caller: Caller, ref: str) -> list[Event]:
    """Changes to a service of the caller's tenancy, oldest first: who issued tokens,
    which keys were bound and revoked, who changed its access."""
    with db.read() as session:
        service = _own_service(session, caller, ref)
        rows = list(
            session.scalars(
                select(Event)
                .where(Event.object_kind == "service", Event.object_id == service.id)
                .order_by(Event.id)
            )
        )
        session.expunge_all()
        return rows


def update_service(
    db: Database,
    caller: Caller,
    ref: str,
    *,
    public: bool | None = None,
    access: list[str] | None = None,
) -> None:
    """Change who may reach a service; takes effect at the gateway within seconds."""
    with db.write() as session:
        service = _managed_service(session, caller, ref, "change who may reach it")
        if public is not None and public != service.public:
            service.public = public
            audit(
                session,
                service,
                f"made {'public' if public else 'private'} by {caller.user_name}",
            )
        if access is not None:
            users = _users_by_name(session, access, service.tenancy_id)
            before = set(
                session.scalars(
                    select(User.name)
                    .join(ServiceAccess, ServiceAccess.user_id == User.id)
                    .where(ServiceAccess.service_id == service.id)
                )
            )
            session.execute(delete(ServiceAccess).where(ServiceAccess.service_id == service.id))
            session.add_all(ServiceAccess(service_id=service.id, user_id=u.id) for u in users)
            after = {u.name for u in users}
            if after != before:
                changes = [f"+{n}" for n in sorted(after - before)]
                changes += [f"-{n}" for n in sorted(before - after)]
                audit(session, service, f"access {' '.join(changes)} by {caller.user_name}")
        service.updated_at = utcnow()


def delete_service(db: Database, caller: Caller, ref: str) -> None:
    """Delete a service: its keys stop working and its tunnels are cut."""
    with db.write() as session:
        session.delete(_managed_service(session, caller, ref, "delete it"))


def revoke_key(db: Database, caller: Caller, ref: str, key_id: str) -> None:
    """Unbind one key from a service; its connections are cut within seconds."""
    with db.write() as session:
        service = _managed_service(session, caller, ref, "revoke its keys")
        key = session.scalar(
            select(TunnelKey).where(TunnelKey.service_id == service.id, TunnelKey.id == key_id)
        )
        if key is None:
            raise NotFound(f"service '{service.name}' has no key '{key_id}'")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            audit(session, service, f"key {key.fingerprint} revoked by {caller.user_name}")


@dataclass(frozen=True)
class Association:
    """What a client learns when it exchanges its token."""

    service: Service
    """The service its key now serves."""
    key: TunnelKey
    """The bound key."""


def associate(
    db: Database,
    token: str,
    public_key: str,
    config: dict[str, object] | None = None,
    *,
    max_keys: int = 20,
) -> Association:
    """Exchange a single-use token: bind ``public_key`` to the token's service.

    First use wins: of concurrent exchanges of one token exactly one succeeds. ``config``
    may change the service's ``protocol``, ``liveness_path``, ``liveness_period_s`` and
    ``read_timeout_s`` (only the keys given); who may reach the service is never up to the
    client.
    """
    key = parse_public_key(public_key)
    service_id = _check_token_signature(gateway_secret(db), token)
    now = utcnow()
    with db.write() as session:
        row = session.scalar(
            select(TunnelToken).where(TunnelToken.token_hash == token_digest(token))
        )
        if row is None or row.service_id != service_id:
            raise TokenInvalid("this token is unknown (was its service deleted?)")
        if row.used_at is not None:
            raise TokenUsed(
                "this token was already exchanged; ask the service's owner for a new one "
                "(ecliptic service token NAME)"
            )
        if row.expires_at <= now:
            raise TokenExpired("this token has expired; ask the service's owner for a new one")
        claimed = session.execute(
            update(TunnelToken)
            .where(TunnelToken.id == row.id, TunnelToken.used_at.is_(None))
            .values(used_at=now)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            raise TokenUsed("this token was already exchanged")
        service = session.get(Service, service_id)
        if service is None:
            raise TokenInvalid("the token's service was deleted")
        existing = session.scalar(select(TunnelKey).where(TunnelKey.fingerprint == key.fingerprint))
        if existing is not None and (
            existing.service_id != service.id or existing.revoked_at is not None
        ):
            raise Conflict(
                "this SSH key is already bound to a service or was revoked: generate a new key "
                "for this client"
            )
        live_keys = session.scalar(
            select(func.count())
            .select_from(TunnelKey)
            .where(TunnelKey.service_id == service.id, TunnelKey.revoked_at.is_(None))
        )
        if existing is None and (live_keys or 0) >= max_keys:
            raise Conflict(
                f"service '{service.name}' has {live_keys} keys bound, its limit: revoke one "
                "('ecliptic service revoke-key'), or ask an administrator to raise "
                "ECLIPTIC_GATEWAY_MAX_KEYS"
            )
        # A token binds a key and nothing else: the settings a client brings are taken
        # from the first client only (the service had no key yet); later ones must agree.
        first = session.scalar(select(TunnelKey.id).where(TunnelKey.service_id == service.id))
        changed = []
        for name, value in (config or {}).items():
            if name not in CLIENT_SETTINGS:
                raise InvalidInput(f"a client may not set '{name}'")
            current = getattr(service, name)
            if current == value:
                continue
            if first is not None:
                shown = "none" if current is None else repr(current)
                raise Conflict(
                    f"service '{service.name}' has {name} {shown} (set when it was made or by "
                    f"its first client); this client asks for {value!r}: a token only binds a "
                    "key (make a new service for other settings)"
                )
            setattr(service, name, value)
            changed.append(f"{name} {value!r}")
        if changed:
            # What a client changes is the owner's to see (``service events``).
            audit(
                session,
                service,
                f"{', '.join(changed)} set by its first client (key {key.fingerprint})",
            )
        bound = existing or TunnelKey(
            service_id=service.id, fingerprint=key.fingerprint, public_key=key.line
        )
        session.add(bound)
        try:
            session.flush()
        except IntegrityError:
            raise Conflict("this SSH key was bound to a service at the same moment") from None
        if existing is None:
            audit(session, service, f"key {key.fingerprint} bound by a token")
        session.refresh(service)
        session.expunge_all()
        return Association(service, bound)


def _check_token_signature(secret: bytes, token: str) -> str:
    """The service id a token names, after checking its signature and expiry."""
    if not token.startswith(TOKEN_PREFIX) or token.count(".") != 3:
        raise TokenInvalid("this is not an Ecliptic association token (they start with 'ectt_')")
    payload, _, mac = token[len(TOKEN_PREFIX) :].rpartition(".")
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise TokenInvalid("this token's signature is wrong: it was not issued here")
    service_id, expiry, _ = payload.split(".")
    if int(expiry) <= time.time():
        raise TokenExpired("this token has expired; ask the service's owner for a new one")
    return service_id


# --- what the gateway needs ---------------------------------------------------------------


@dataclass(frozen=True)
class RoutedService:
    """What the gateway routes for one service."""

    id: str
    """Service id."""
    subdomain: str
    """Its DNS label."""
    public: bool
    """Reached without signing in."""
    protocol: str
    """``http``, ``https`` or ``tcp``."""
    liveness_path: str | None
    """Probe path, or None."""
    liveness_period_s: int
    """Seconds between probes."""
    read_timeout_s: int
    """Longest wait for the service to send something."""
    tenancy_id: str = ""
    """The tenancy it belongs to."""
    owner: str = ""
    """Name of the user who owns it (created it), ``""`` if gone."""


@dataclass(frozen=True)
class GatewayView:
    """Everything a gateway replica routes on, read in one go."""

    services: dict[str, RoutedService]
    """By service id."""
    keys: dict[str, tuple[str, str]]
    """Fingerprint -> (service id, public key line) of keys that are bound and not revoked."""


def gateway_view(db: Database) -> GatewayView:
    """The services and live keys, as the gateway needs them."""
    with db.read() as session:
        services = {
            s.id: RoutedService(
                s.id,
                s.subdomain,
                s.public,
                s.protocol,
                s.liveness_path,
                s.liveness_period_s,
                s.read_timeout_s,
                s.tenancy_id,
                owner or "",
            )
            for s, owner in session.execute(
                select(Service, User.name).outerjoin(User, User.id == Service.created_by)
            )
        }
        keys = {
            k.fingerprint: (k.service_id, k.public_key)
            for k in session.scalars(select(TunnelKey).where(TunnelKey.revoked_at.is_(None)))
        }
    return GatewayView(services, keys)


def view_version(db: Database) -> tuple[object, ...]:
    """A cheap value that changes whenever ``gateway_view`` would (polled several times a
    second by every replica): row counts and latest update times of services and keys."""
    with db.read() as session:
        services = session.execute(
            select(func.count(Service.id), func.max(Service.updated_at))
        ).one()
        keys = session.execute(
            select(func.count(TunnelKey.id), func.max(TunnelKey.updated_at))
        ).one()
    return (*services, *keys)


def record_endpoints(db: Database, gateway_id: str, endpoints: list[TunnelEndpoint]) -> None:
    """Replace what replica ``gateway_id`` reported as connected."""
    with db.write() as session:
        session.execute(delete(TunnelEndpoint).where(TunnelEndpoint.gateway_id == gateway_id))
        wanted = {e.service_id for e in endpoints}
        live = set(session.scalars(select(Service.id).where(Service.id.in_(wanted))))
        session.add_all(e for e in endpoints if e.service_id in live)


@dataclass(frozen=True)
class ReplicaBeat:
    """A replica as its last heartbeat left it in the store."""

    id: str
    """Replica id (``TunnelEndpoint.gateway_id``)."""
    peer_address: str
    """``ip:port`` of its plain-HTTP front, for requests its peers forward."""
    heartbeat_at: datetime
    """Its last heartbeat, by its own clock."""


@dataclass(frozen=True)
class PeerView:
    """What a replica needs to forward to its peers, read in one go."""

    replicas: tuple[ReplicaBeat, ...]
    """Every replica with a row, itself included."""
    held: tuple[tuple[str, str], ...]
    """(replica id, service id) of each healthy tunnel a replica reports."""


def heartbeat(db: Database, gateway_id: str, peer_address: str) -> bool:
    """Record that replica ``gateway_id`` is alive at ``peer_address``.

    False when it had no row (first beat, or a peer pruned it after a long silence): its
    tunnels must then be recorded again.
    """
    now = utcnow()
    with db.write() as session:
        beat = session.execute(
            update(GatewayReplica)
            .where(GatewayReplica.id == gateway_id)
            .values(heartbeat_at=now, peer_address=peer_address)
        )
        if beat.rowcount == 1:  # type: ignore[attr-defined]
            return True
        session.add(
            GatewayReplica(
                id=gateway_id, peer_address=peer_address, started_at=now, heartbeat_at=now
            )
        )
        return False


def peer_view(db: Database) -> PeerView:
    """The replicas and which of them hold a healthy tunnel for which service."""
    with db.read() as session:
        replicas = tuple(
            ReplicaBeat(r.id, r.peer_address, r.heartbeat_at)
            for r in session.scalars(select(GatewayReplica).order_by(GatewayReplica.id))
        )
        held = tuple(
            (gateway_id, service_id)
            for gateway_id, service_id in session.execute(
                select(TunnelEndpoint.gateway_id, TunnelEndpoint.service_id)
                .where(TunnelEndpoint.healthy.is_(True))
                .distinct()
            )
        )
    return PeerView(replicas, held)


def forget_replica(db: Database, gateway_id: str) -> None:
    """Remove a stopping replica and every tunnel it reported."""
    with db.write() as session:
        session.execute(delete(TunnelEndpoint).where(TunnelEndpoint.gateway_id == gateway_id))
        session.execute(delete(GatewayReplica).where(GatewayReplica.id == gateway_id))


def prune_replicas(db: Database, silent_since: datetime) -> list[str]:
    """Forget replicas whose last heartbeat is older than ``silent_since`` (crashed ones),
    with the tunnels they reported; returns their ids."""
    with db.write() as session:
        gone = list(
            session.scalars(
                select(GatewayReplica.id).where(GatewayReplica.heartbeat_at < silent_since)
            )
        )
        if gone:
            session.execute(delete(TunnelEndpoint).where(TunnelEndpoint.gateway_id.in_(gone)))
            session.execute(delete(GatewayReplica).where(GatewayReplica.id.in_(gone)))
    return gone


def live_tunnels(db: Database) -> list[TunnelEndpoint]:
    """Every tunnel every replica reports (admins)."""
    with db.read() as session:
        rows = list(session.scalars(select(TunnelEndpoint).order_by(TunnelEndpoint.connected_at)))
        session.expunge_all()
        return rows


# --- access decisions ---------------------------------------------------------------------


def subdomain_of(host: str, domain: str) -> str | None:
    """The service label of a request's host, or None when the host is not a service's.

    Ports, letter case and a trailing dot do not matter; only a direct child of ``domain``
    is a service.
    """
    host = host.strip().lower()
    if host.startswith("["):
        return None
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    host = host.rstrip(".")
    suffix = "." + domain.strip(".").lower()
    if not host.endswith(suffix):
        return None
    label = host[: -len(suffix)]
    return label if _SUBDOMAIN.match(label) else None


def _service_at(session: Session, host: str, domain: str) -> Service | None:
    """The service whose subdomain ``host`` names, if any."""
    label = subdomain_of(host, domain)
    if label is None:
        return None
    return session.scalar(select(Service).where(Service.subdomain == label))


@dataclass(frozen=True)
class Decision:
    """The gateway's answer for one request to a signed-in service."""

    status: int
    """200 allowed, 401 not signed in, 403 not allowed."""
    user: str = ""
    """Signed-in user's name (200)."""
    email: str = ""
    """Their e-mail (200)."""
    forward_cookie: str = ""
    """The request's Cookie header without the gateway's own cookie."""
    forward_authorization: str = ""
    """The request's Authorization header unless it was an Ecliptic credential."""
    login_url: str = ""
    """Where a browser goes to sign in (401)."""
    credential: str = ""
    """Which credential let the request in (200): ``session:<id>`` or ``token:<hash>``,
    never the credential itself. The gateway's relay keeps it with each long-lived
    connection (WebSocket, event stream, streamed upload) and ends the connection when the
    credential ends (sign-out, token deleted or expired)."""
    message: str = ""
    """Why not (401, 403)."""


def strip_cookie(header: str, name: str = COOKIE_NAME) -> tuple[str, str | None]:
    """``header`` without cookie ``name``, and that cookie's value."""
    kept: list[str] = []
    value: str | None = None
    for part in header.split(";"):
        k, sep, v = part.strip().partition("=")
        if not k and not sep:
            continue
        if k == name:
            value = v
        else:
            kept.append(part.strip())
    return "; ".join(kept), value


class GatewayAuth:
    """Decides who may reach which service, and runs the sign-in hand-off to subdomains."""

    def __init__(
        self, db: Database, *, domain: str, front_url: str, portal_url: str, session_ttl: timedelta
    ) -> None:
        self.db = db
        self.domain = domain
        self.front_url = front_url
        self.portal_url = portal_url.rstrip("/")
        self.session_ttl = session_ttl
        self._secret = gateway_secret(db)

    # cookies -------------------------------------------------------------------------

    def _cookie_value(self, session_id: str, host: str) -> str:
        return f"{session_id}.{_mac(self._secret, session_id + '|' + host)}"

    def _cookie_user(self, session: Session, value: str, host: str) -> str | None:
        """The user a service session cookie signs in on ``host``, while its session lasts
        (server-side: signing out of the service or of the portal ends it)."""
        session_id = value.partition(".")[0]
        if not session_id or not hmac.compare_digest(value, self._cookie_value(session_id, host)):
            return None
        row = session.get(GatewaySession, session_id)
        if row is None or row.host != host or row.expires_at <= utcnow():
            return None
        return row.user_id

    def end_session(self, value: str, host: str) -> None:
        """Sign a browser out of one service: its session ends at once."""
        session_id, _, _ = value.partition(".")
        if not session_id or not hmac.compare_digest(value, self._cookie_value(session_id, host)):
            return
        with self.db.write() as session:
            session.execute(delete(GatewaySession).where(GatewaySession.id == session_id))

    def csrf_token(self, purpose: str, credential: str) -> str:
        """A token a sign-out form carries: only a page served with ``credential`` knows it."""
        return _mac(self._secret, f"csrf|{purpose}|{credential}")[:32]

    def check_csrf(self, purpose: str, credential: str, token: str) -> bool:
        """True when ``token`` is the form token for ``credential``."""
        # Compared as bytes: a crafted non-ASCII token is simply not the token.
        return bool(credential) and hmac.compare_digest(
            token.encode(), self.csrf_token(purpose, credential).encode()
        )

    # decisions -----------------------------------------------------------------------

    def decide(
        self, *, host: str, uri: str, scheme: str, cookie: str, authorization: str, browser: bool
    ) -> Decision:
        """May the bearer of these credentials reach the service at ``host``?"""
        # Over HTTPS only the __Host- cookie counts (browsers keep it host-only and Secure);
        # every variant of Ecliptic's cookies is taken out of what the service gets.
        https = scheme == "https"
        forward_cookie, session_value = strip_cookie(cookie, cookie_name(COOKIE_NAME, https))
        for name in (COOKIE_NAME, PORTAL_COOKIE, STATE_COOKIE):
            for variant in (name, cookie_name(name, True)):
                forward_cookie, _ = strip_cookie(forward_cookie, variant)
        # Ecliptic's own API tokens never reach a service, however the user signed in.
        bearer = authorization[:7].lower() == "bearer " and authorization[7:].strip()
        ecliptic_token = bool(bearer) and str(bearer).startswith(API_TOKEN_PREFIX)
        forward_auth = "" if ecliptic_token else authorization
        host = host.lower().rstrip(".")
        user: User | None = None
        with self.db.read() as session:
            service = _service_at(session, host, self.domain)
            if service is None:
                return Decision(403, message=f"no service at {host}")
            service_id = service.id
            uid = self._cookie_user(session, session_value, host) if session_value else None
            user = session.get(User, uid) if uid else None
        credential = SESSION_CREDENTIAL + str(session_value).partition(".")[0] if user else ""
        if user is None and authorization[:7].lower() == "bearer ":
            # The API's own token check (hash, expiry, disabled users), not a copy of it.
            try:
                user = authenticate(self.db, authorization[7:].strip())
                forward_auth = ""
                credential = TOKEN_CREDENTIAL + token_digest(authorization[7:].strip())
            except Unauthenticated:
                user = None
        if user is None or user.disabled:
            login = self.login_url(host, uri, scheme) if browser else ""
            return Decision(
                401,
                forward_cookie=forward_cookie,
                login_url=login,
                message="sign in to reach this service",
            )
        with self.db.read() as session:
            allowed = session.get(ServiceAccess, (service_id, user.id)) is not None
        if not allowed:
            return Decision(403, user=user.name, message=f"{user.name} may not reach {host}")
        return Decision(
            200,
            user=user.name,
            email=user.email,
            forward_cookie=forward_cookie,
            forward_authorization=forward_auth,
            credential=credential,
        )

    def login_url(self, host: str, uri: str, scheme: str) -> str:
        """Where a browser goes to sign in: first its service's own ``/_ecliptic/start``,
        which sets the state cookie on that host and sends it on to the portal."""
        base = self._service_base(host, scheme)
        return f"{base}/_ecliptic/start?{urlencode({'next': uri or '/'})}"

    def _service_base(self, host: str, scheme: str) -> str:
        label = host.split(".", 1)[0]
        base = self.front_url.format(label)
        if scheme == "https" and base.startswith("http://"):
            base = "https://" + base[len("http://") :]
        return base

    def begin(self, host: str, next_uri: str, scheme: str) -> tuple[str, str]:
        """A browser starts signing in on ``host``: the state for its cookie there, and the
        portal URL to go to (which carries the state back with the code)."""
        state = secrets.token_urlsafe(24)
        query = urlencode(
            {"host": host, "next": safe_next(next_uri), "scheme": scheme, "state": state}
        )
        return state, f"{self.portal_url}/gateway/authorize?{query}"

    def authorize(
        self,
        user: User,
        host: str,
        next_uri: str,
        scheme: str,
        *,
        state: str,
        portal_token_id: str | None,
    ) -> str:
        """After sign-in: a single-use code for ``host``, for the browser holding ``state``
        there, as the URL that hands it over."""
        host = host.lower().rstrip(".")
        if not state:
            raise InvalidInput(
                "sign-in must start at the service's own address: open the service again"
            )
        code = secrets.token_urlsafe(24)
        with self.db.write() as session:
            service = _service_at(session, host, self.domain)
            if service is None:
                raise NotFound(f"there is no service at {host}")
            if not service.public and session.get(ServiceAccess, (service.id, user.id)) is None:
                raise Forbidden(
                    f"{user.name} may not reach {host}: ask the service's owner for access"
                )
            session.add(
                GatewayCode(
                    code_hash=token_digest(code),
                    user_id=user.id,
                    host=host,
                    expires_at=utcnow() + CODE_TTL,
                    portal_token_id=portal_token_id,
                    state_hash=token_digest(state),
                )
            )
            session.execute(delete(GatewayCode).where(GatewayCode.expires_at < utcnow()))
        base = self._service_base(f"{service.subdomain}.{self.domain}", scheme)
        query = urlencode({"code": code, "next": safe_next(next_uri)})
        return f"{base}/_ecliptic/callback?{query}"

    def exchange(self, code: str, host: str, state: str) -> str:
        """Redeem a sign-in code on ``host``, in the browser that started the sign-in there
        (its state cookie): the session cookie value. Single use."""
        host = host.lower().rstrip(".")
        now = utcnow()
        with self.db.write() as session:
            row = session.get(GatewayCode, token_digest(code))
            if row is None or row.host != host:
                raise Forbidden("this sign-in link is not valid here: open the service again")
            if row.used_at is not None or row.expires_at <= now:
                raise Forbidden("this sign-in link was used or has expired: open the service again")
            if not state or not hmac.compare_digest(row.state_hash or "", token_digest(state)):
                raise Forbidden(
                    "this sign-in was started in another browser (or its cookie is gone): "
                    "open the service again in this one"
                )
            row.used_at = now
            session_id = secrets.token_hex(16)
            # A service session never outlives the portal sign-in it came from.
            expires = now + self.session_ttl
            portal = session.get(ApiToken, row.portal_token_id) if row.portal_token_id else None
            if portal is not None and portal.expires_at is not None:
                expires = min(expires, portal.expires_at)
            session.add(
                GatewaySession(
                    id=session_id,
                    user_id=row.user_id,
                    host=host,
                    portal_token_id=row.portal_token_id,
                    expires_at=expires,
                )
            )
            session.execute(delete(GatewaySession).where(GatewaySession.expires_at < now))
        return self._cookie_value(session_id, host)


def safe_next(uri: str) -> str:
    """``uri`` if it is a path on the same host, else ``/`` (no open redirects)."""
    if not uri.startswith("/") or uri.startswith("//") or "\\" in uri or "\n" in uri:
        return "/"
    return uri
