"""Settings of one Ecliptic instance, read from the environment (``ECLIPTIC_*``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ecliptic.scheduler.filters import FilterError, compile_filter


def _data_dir() -> Path:
    return Path(os.environ.get("ECLIPTIC_DATA_DIR") or platformdirs.user_data_dir("ecliptic"))


@dataclass(frozen=True)
class Settings:
    """Where an instance keeps its state and how it is reached."""

    data_dir: Path
    """Folder for the SQLite file, console logs and other state."""
    database_url: str
    """SQLAlchemy URL; SQLite under ``data_dir`` unless ``ECLIPTIC_DATABASE_URL`` is set."""
    host: str
    """Address the API listens on."""
    port: int
    """Port the API listens on."""
    inventory_path: Path | None
    """Inventory YAML of the local cloud; the packaged default when ``None``."""
    workers: int
    """Reconciler threads started by ``ecliptic serve``."""
    backend: str
    """Backend name (``local``)."""
    owners_dir: Path
    """Where the local cloud records which instance owns which namespace and link."""
    preemptible_min_lifetime: timedelta = timedelta(hours=1)
    """How long a preemptible server is guaranteed to run before a lease may evict it."""
    preemptible_grace: timedelta = timedelta(seconds=30)
    """Between SIGTERM and deletion of a preempted server (``ECLIPTIC_PREEMPTIBLE_GRACE_SECONDS``);
    a lease that needs its room waits this long (and books it: see docs/leases.md)."""
    deleted_server_retention: timedelta = timedelta(days=7)
    """How long a deleted server's record and events stay readable by its tenancy
    (``ECLIPTIC_DELETED_SERVER_RETENTION_HOURS``; ``server list --deleted``)."""
    image_dir: Path | None = None
    """Where the local cloud keeps built images (``ECLIPTIC_IMAGE_DIR``; ``data_dir/images``
    when None). Instances on one machine may share it: a build is then made once."""
    image_recipes: tuple[Path, ...] = ()
    """Operators' folders of image recipes (``ECLIPTIC_IMAGE_RECIPES``, ``:``-separated),
    besides the built-in ones; a recipe there overrides a built-in of the same name."""
    platform_preemptible: bool = False
    """Whether platforms may run on preemptible capacity (``ECLIPTIC_PLATFORM_PREEMPTIBLE``,
    ``on``/``off``): they backfill what nobody reserved, and go when a lease needs it."""
    platform_types: tuple[Path, ...] = ()
    """Operators' folders of platform types (``ECLIPTIC_PLATFORM_TYPES``, ``:``-separated),
    besides the built-in ones; a type there replaces a built-in of the same name."""
    metered_classes: tuple[str, ...] = ("gpu:*", "host:*")
    """Resource classes whose on-demand use is charged by the hour from credits
    (``ECLIPTIC_METERED_CLASSES``, comma-separated patterns; empty: nothing is metered)."""
    meter_warn: timedelta = timedelta(hours=24)
    """Warn when on-demand credits last less than this (``ECLIPTIC_METER_WARN_HOURS``)."""
    gateway: str = "auto"
    """Run the tunnel gateway inside ``ecliptic serve``: ``on``, ``off`` or ``auto`` (when its
    prerequisites are met: root, sshd, nginx, the ``tunnel`` account)."""
    gateway_domain: str = "localhost"
    """Base domain of services: a service is reached at ``<subdomain>.<gateway_domain>``."""
    gateway_http_host: str = "127.0.0.1"
    """Address the gateway's HTTP front listens on."""
    gateway_http_port: int = 8480
    """Port of the gateway's plain-HTTP front."""
    gateway_tls_port: int | None = None
    """Port of the gateway's TLS front; needs ``gateway_tls_cert`` and ``gateway_tls_key``."""
    gateway_tls_cert: Path | None = None
    """Operator's certificate (wildcard for the base domain), PEM."""
    gateway_tls_key: Path | None = None
    """Private key of ``gateway_tls_cert``, PEM."""
    gateway_ssh_host: str = "0.0.0.0"
    """Address the tunnel SSH endpoint listens on (servers of the local cloud reach it through
    their network's gateway address)."""
    gateway_ssh_port: int = 2222
    """Port of the tunnel SSH endpoint (``ssh -R ... tunnel@gateway -p PORT``)."""
    gateway_ssh_public: str | None = None
    """``host[:port]`` clients are told to connect to; by default the host they reached the
    API at, and ``gateway_ssh_port``."""
    gateway_jump_port: int = 2223
    """Port of the SSH jump host for TCP services (``ssh -J user@gateway:PORT name``)."""
    gateway_peer_port: int = 8482
    """Port of the peer listener (``ECLIPTIC_GATEWAY_PEER_PORT``): the only place the
    instance's other replicas reach this one, over mutual TLS with the instance's peer
    certificate; 0 picks a free port (one machine only)."""
    gateway_token_ttl: timedelta = timedelta(hours=24)
    """How long an association token stays valid."""
    gateway_session_ttl: timedelta = timedelta(hours=12)
    """How long a sign-in on a service's subdomain lasts."""
    gateway_max_services: int = 100
    """Services one tenancy may have (``ECLIPTIC_GATEWAY_MAX_SERVICES``): each one is a
    route in every replica's front."""
    gateway_max_keys: int = 20
    """Keys bound to one service and not revoked (``ECLIPTIC_GATEWAY_MAX_KEYS``)."""
    gateway_max_tunnels: int = 200
    """Tunnels one tenancy may have connected at once, across replicas
    (``ECLIPTIC_GATEWAY_MAX_TUNNELS``): each holds a connection, a listener and a route."""
    gateway_max_tunnels_per_user: int = 50
    """Tunnels the services of one owner may have connected at once, across replicas
    (``ECLIPTIC_GATEWAY_MAX_TUNNELS_PER_USER``): one member cannot use up the tenancy's
    ``gateway_max_tunnels`` alone."""
    secret_key_file: Path | None = None
    """The key that seals the instance's secrets in the store (``ECLIPTIC_SECRET_KEY_FILE``;
    ``secret.key`` in ``data_dir`` when None). Every replica needs the same file."""
    portal_url: str | None = None
    """URL browsers sign in at; the API's own URL when None (set it for a standalone gateway)."""
    gateway_state_dir: Path | None = None
    """Root-owned folder for sshd's and nginx's generated files; ``/run/ecliptic/gw-<id>``
    when None."""
    gateway_peer_url: str | None = None
    """``host:port`` where other replicas reach this replica's peer listener to forward
    requests for tunnels connected here; by default ``gateway_http_host`` (or, when that is
    0.0.0.0/::, this machine's primary address) and ``gateway_peer_port``. A host name is
    resolved once at start."""
    gateway_peer_stale_s: float = 5.0
    """A replica whose heartbeat (every second) has not moved for this long is taken as gone:
    its tunnels are no longer forwarded to."""
    oidc: OidcSettings | None = None
    """Sign-in with an OpenID Connect provider (``ECLIPTIC_OIDC_*``); None: not offered."""
    ironic: IronicSettings | None = None
    """Bare metal through an Ironic (``ECLIPTIC_IRONIC_*``); None: hosts come from the
    inventory file only."""

    @property
    def secret_key_path(self) -> Path:
        """Where the secret key file is."""
        return self.secret_key_file or self.data_dir / "secret.key"

    @property
    def gateway_front_url(self) -> str:
        """Scheme, base host and port of service URLs, e.g. ``http://{}.localhost:8480``."""
        if self.gateway_tls_port:
            port = "" if self.gateway_tls_port == 443 else f":{self.gateway_tls_port}"
            return f"https://{{}}.{self.gateway_domain}{port}"
        port = "" if self.gateway_http_port == 80 else f":{self.gateway_http_port}"
        return f"http://{{}}.{self.gateway_domain}{port}"

    @property
    def public_url(self) -> str:
        """Base URL people and servers use to reach the API."""
        if self.portal_url:
            return self.portal_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class IronicSettings:
    """An Ironic whose nodes are hosts, and the policy of the bare-metal-or-hypervisor pool."""

    url: str
    """Ironic's API endpoint, e.g. ``http://127.0.0.1:6385`` (``ECLIPTIC_IRONIC_URL``)."""
    username: str = ""
    """HTTP basic user (``ECLIPTIC_IRONIC_USERNAME``; empty: no authentication)."""
    password: str = field(default="", repr=False)
    """HTTP basic password (``ECLIPTIC_IRONIC_PASSWORD``); never in a repr (nor a log)."""
    sync_s: float = 10.0
    """How often nodes are read back (``ECLIPTIC_IRONIC_SYNC_SECONDS``): enrolment,
    maintenance and retirement show up within this."""
    pool: str = ""
    """Which Ironic hosts form the bare-metal-or-hypervisor pool: a host filter such as
    ``resource_class == "compute"`` (``ECLIPTIC_HYPERVISOR_POOL``; empty: none, every node is
    bare metal only)."""
    spare: int = 0
    """Empty hypervisors the policy keeps ready for on-demand VMs
    (``ECLIPTIC_POOL_SPARE_HYPERVISORS``)."""
    idle: timedelta = timedelta(minutes=10)
    """A hypervisor that held no server this long goes back to bare metal
    (``ECLIPTIC_POOL_IDLE_SECONDS``)."""
    margin: timedelta = timedelta(seconds=60)
    """Added to the measured build time: how far ahead of a lease's start a host is converted
    (``ECLIPTIC_POOL_LEAD_MARGIN_SECONDS``)."""
    deploy_timeout: timedelta = timedelta(minutes=30)
    """A deployment (a bare-metal server, a hypervisor) not active after this fails
    (``ECLIPTIC_IRONIC_DEPLOY_TIMEOUT_SECONDS``)."""
    retries: int = 2
    """Failed deployments retried (Ironic tears down and cleans the node first) before the
    server or the conversion is in ERROR (``ECLIPTIC_IRONIC_RETRIES``)."""


def ironic_settings() -> IronicSettings | None:
    """The ``ECLIPTIC_IRONIC_*`` and pool variables, checked: None when no URL is set."""
    env = os.environ.get
    url = env("ECLIPTIC_IRONIC_URL", "").strip().rstrip("/")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise InvalidSetting(
            f"ECLIPTIC_IRONIC_URL={url!r}: give Ironic's API endpoint, e.g. http://127.0.0.1:6385"
        )
    pool = env("ECLIPTIC_HYPERVISOR_POOL", "").strip()
    if len(pool) > 1000:
        raise InvalidSetting("ECLIPTIC_HYPERVISOR_POOL: at most 1000 characters")
    if pool:
        try:
            compile_filter(pool)
        except FilterError as exc:
            raise InvalidSetting(f"ECLIPTIC_HYPERVISOR_POOL={pool!r}: {exc}") from None
    return IronicSettings(
        url=url,
        username=env("ECLIPTIC_IRONIC_USERNAME", ""),
        password=env("ECLIPTIC_IRONIC_PASSWORD", ""),
        sync_s=float(bounded_setting("ECLIPTIC_IRONIC_SYNC_SECONDS", 10, 1, 3600)),
        pool=pool,
        spare=bounded_setting("ECLIPTIC_POOL_SPARE_HYPERVISORS", 0, 0, 1000),
        idle=timedelta(seconds=bounded_setting("ECLIPTIC_POOL_IDLE_SECONDS", 600, 0, 7 * 86400)),
        margin=timedelta(
            seconds=bounded_setting("ECLIPTIC_POOL_LEAD_MARGIN_SECONDS", 60, 0, 86400)
        ),
        deploy_timeout=timedelta(
            seconds=bounded_setting("ECLIPTIC_IRONIC_DEPLOY_TIMEOUT_SECONDS", 1800, 1, 86400)
        ),
        retries=bounded_setting("ECLIPTIC_IRONIC_RETRIES", 2, 0, 10),
    )


@dataclass(frozen=True)
class OidcGrant:
    """One entry of ``ECLIPTIC_OIDC_GROUPS``: members of ``group`` get ``role`` in
    ``tenancy``."""

    group: str
    """The group's name as the provider sends it in the groups claim."""
    tenancy: str
    """A tenancy's name, or ``*``: every tenancy (with role ``admin``: an Ecliptic
    administrator)."""
    role: str
    """``member`` or ``admin`` (see ``ecliptic.services.identity.ROLES``)."""


@dataclass(frozen=True)
class OidcSettings:
    """An operator's OpenID Connect provider, and how its groups map to tenancies."""

    issuer: str
    """The provider's issuer URL (metadata at ``<issuer>/.well-known/openid-configuration``)."""
    client_id: str
    """Ecliptic's client id at the provider."""
    client_secret: str = field(default="", repr=False)
    """Ecliptic's client secret ('': a public client, which PKCE alone protects); never in
    a repr."""
    label: str = "Sign in with your institution"
    """Text of the sign-in button."""
    groups_claim: str = "groups"
    """The claim (in the ID token or from the userinfo endpoint) that lists the user's groups."""
    grants: tuple[OidcGrant, ...] = ()
    """Which groups give which role in which tenancy."""


OIDC_ROLES = ("member", "admin")
"""Roles a group may grant in a tenancy (``ecliptic.services.identity.ROLES``)."""
_TENANCY = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def oidc_settings() -> OidcSettings | None:
    """The ``ECLIPTIC_OIDC_*`` variables, checked: None when no issuer is set."""
    env = os.environ.get
    issuer = env("ECLIPTIC_OIDC_ISSUER", "").strip().rstrip("/")
    client_id = env("ECLIPTIC_OIDC_CLIENT_ID", "").strip()
    if not issuer and not client_id:
        return None
    if not issuer or not client_id:
        missing = "ECLIPTIC_OIDC_CLIENT_ID" if issuer else "ECLIPTIC_OIDC_ISSUER"
        raise InvalidSetting(
            f"{missing} is not set: OpenID Connect sign-in needs both the issuer URL and the "
            "client id (or neither, to turn it off)"
        )
    try:
        url = urlsplit(issuer)
        host = url.hostname or ""
    except ValueError:
        url, host = urlsplit(""), ""
    if (
        not host
        or url.query
        or url.fragment
        or len(issuer) > 255
        or not (url.scheme == "https" or (url.scheme == "http" and host in _LOOPBACK))
    ):
        raise InvalidSetting(
            f"ECLIPTIC_OIDC_ISSUER={issuer!r}: give the provider's https:// issuer URL "
            "(at most 255 characters; plain http only on this machine's loopback)"
        )
    return OidcSettings(
        issuer=issuer,
        client_id=client_id,
        client_secret=env("ECLIPTIC_OIDC_CLIENT_SECRET", ""),
        label=env("ECLIPTIC_OIDC_LABEL", "").strip() or "Sign in with your institution",
        groups_claim=env("ECLIPTIC_OIDC_GROUPS_CLAIM", "").strip() or "groups",
        grants=parse_oidc_groups(env("ECLIPTIC_OIDC_GROUPS", "")),
    )


def parse_oidc_groups(raw: str) -> tuple[OidcGrant, ...]:
    """``group=tenancy:role,...`` (``*:admin``: an Ecliptic administrator) as grants; a bad
    entry is an ``InvalidSetting`` that names it."""
    grants = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        group, eq, target = entry.rpartition("=")
        tenancy, colon, role = target.partition(":")
        group, tenancy, role = group.strip(), tenancy.strip(), role.strip()
        problem = ""
        if not eq or not colon or not group:
            problem = "write group=tenancy:role"
        elif tenancy == "*" and role != "admin":
            problem = "'*' only takes the role admin: '*:admin' makes administrators"
        elif tenancy != "*" and not _TENANCY.match(tenancy):
            problem = f"'{tenancy}' is not a tenancy name (lowercase letters, digits and '-')"
        elif role not in OIDC_ROLES:
            problem = f"'{role}' is not a role: give {' or '.join(OIDC_ROLES)}"
        if problem:
            raise InvalidSetting(
                f"ECLIPTIC_OIDC_GROUPS entry {entry!r}: {problem}, e.g. "
                "'physics=physics:member,physics-admins=physics:admin,cloud-ops=*:admin'"
            )
        grants.append(OidcGrant(group, tenancy, role))
    return tuple(grants)


QUOTA_MAX = 2**31 - 1
"""The largest quota limit, from the environment or the API alike (a 32-bit column holds it)."""


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides winning."""
    for quota in ("SERVERS", "VCPUS", "MEMORY_MB", "GPUS"):
        # Read by the quota service at each create; a bad value is refused at start instead.
        bounded_setting(f"ECLIPTIC_QUOTA_{quota}", 0, 0, QUOTA_MAX)
    data_dir = Path(str(overrides.pop("data_dir", None) or _data_dir()))
    url = os.environ.get("ECLIPTIC_DATABASE_URL") or f"sqlite:///{data_dir / 'ecliptic.db'}"
    inv = os.environ.get("ECLIPTIC_INVENTORY")
    key_file = os.environ.get("ECLIPTIC_SECRET_KEY_FILE")
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": url,
        "secret_key_file": Path(key_file) if key_file else None,
        "host": os.environ.get("ECLIPTIC_HOST", "127.0.0.1"),
        "port": int(os.environ.get("ECLIPTIC_PORT", "8470")),
        "inventory_path": Path(inv) if inv else None,
        "workers": int(os.environ.get("ECLIPTIC_WORKERS", "2")),
        "backend": os.environ.get("ECLIPTIC_BACKEND", "local"),
        "owners_dir": Path(os.environ.get("ECLIPTIC_OWNERS_DIR", "/run/ecliptic/owners")),
        "preemptible_min_lifetime": timedelta(
            minutes=int(os.environ.get("ECLIPTIC_PREEMPTIBLE_MIN_LIFETIME_MINUTES", "60"))
        ),
        "preemptible_grace": timedelta(
            seconds=bounded_setting("ECLIPTIC_PREEMPTIBLE_GRACE_SECONDS", 30, 0, 3600)
        ),
        "deleted_server_retention": timedelta(
            hours=bounded_setting("ECLIPTIC_DELETED_SERVER_RETENTION_HOURS", 7 * 24, 0, 366 * 24)
        ),
        "metered_classes": _metered_classes(),
        "image_dir": Path(os.environ["ECLIPTIC_IMAGE_DIR"])
        if os.environ.get("ECLIPTIC_IMAGE_DIR")
        else None,
        "image_recipes": tuple(
            Path(p) for p in os.environ.get("ECLIPTIC_IMAGE_RECIPES", "").split(":") if p.strip()
        ),
        "platform_preemptible": _on_off("ECLIPTIC_PLATFORM_PREEMPTIBLE", False),
        "platform_types": tuple(
            Path(p) for p in os.environ.get("ECLIPTIC_PLATFORM_TYPES", "").split(":") if p.strip()
        ),
        "meter_warn": timedelta(
            hours=bounded_setting("ECLIPTIC_METER_WARN_HOURS", 24, 0, 24 * 366)
        ),
        **_gateway_settings(),
        "oidc": oidc_settings(),
        "ironic": ironic_settings(),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]


METERED_CLASS = re.compile(r"^(vcpu|(gpu|host|slice|\*):[A-Za-z0-9_.*?-]+|\*)$")


def _metered_classes() -> tuple[str, ...]:
    raw = os.environ.get("ECLIPTIC_METERED_CLASSES")
    if raw is None:
        return ("gpu:*", "host:*")
    items = tuple(p.strip() for p in raw.split(",") if p.strip())
    bad = [p for p in items if not METERED_CLASS.match(p)]
    if bad:
        raise InvalidSetting(
            f"ECLIPTIC_METERED_CLASSES={raw!r}: {', '.join(map(repr, bad))} is not a resource "
            "class pattern; give comma-separated classes such as 'gpu:*,host:*,vcpu' "
            "(or nothing, to meter nothing)"
        )
    return items


def _on_off(name: str, default: bool) -> bool:
    """An on/off setting; anything else is refused at start, naming the variable."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise InvalidSetting(f"{name}={value!r}: give on or off")


def bounded_setting(name: str, default: int, lo: int, hi: int) -> int:
    """An integer setting between ``lo`` and ``hi``, or an ``InvalidSetting`` that says so."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise InvalidSetting(f"{name}={raw!r}: give a whole number from {lo} to {hi}")
    return value


def _gateway_settings() -> dict[str, object]:
    env = os.environ.get
    values: dict[str, object] = {
        "gateway": env("ECLIPTIC_GATEWAY", "auto"),
        "gateway_domain": env("ECLIPTIC_GATEWAY_DOMAIN", "localhost").strip(".").lower(),
        "gateway_http_host": env("ECLIPTIC_GATEWAY_HTTP_HOST", "127.0.0.1"),
        "gateway_http_port": int(env("ECLIPTIC_GATEWAY_HTTP_PORT", "8480")),
        "gateway_ssh_host": env("ECLIPTIC_GATEWAY_SSH_HOST", "0.0.0.0"),
        "gateway_ssh_port": int(env("ECLIPTIC_GATEWAY_SSH_PORT", "2222")),
        "gateway_ssh_public": env("ECLIPTIC_GATEWAY_SSH_PUBLIC") or None,
        "gateway_jump_port": int(env("ECLIPTIC_GATEWAY_JUMP_PORT", "2223")),
        "gateway_peer_port": int(env("ECLIPTIC_GATEWAY_PEER_PORT", "8482")),
        "gateway_token_ttl": timedelta(
            minutes=int(env("ECLIPTIC_GATEWAY_TOKEN_TTL_MINUTES", str(24 * 60)))
        ),
        "gateway_session_ttl": timedelta(
            minutes=int(env("ECLIPTIC_GATEWAY_SESSION_TTL_MINUTES", str(12 * 60)))
        ),
        "gateway_max_services": bounded_setting("ECLIPTIC_GATEWAY_MAX_SERVICES", 100, 1, 100_000),
        "gateway_max_keys": bounded_setting("ECLIPTIC_GATEWAY_MAX_KEYS", 20, 1, 10_000),
        "gateway_max_tunnels": bounded_setting("ECLIPTIC_GATEWAY_MAX_TUNNELS", 200, 1, 100_000),
        "gateway_max_tunnels_per_user": bounded_setting(
            "ECLIPTIC_GATEWAY_MAX_TUNNELS_PER_USER", 50, 1, 100_000
        ),
    }
    if env("ECLIPTIC_GATEWAY_TLS_PORT"):
        values["gateway_tls_port"] = int(env("ECLIPTIC_GATEWAY_TLS_PORT", ""))
        values["gateway_tls_cert"] = Path(env("ECLIPTIC_GATEWAY_TLS_CERT", ""))
        values["gateway_tls_key"] = Path(env("ECLIPTIC_GATEWAY_TLS_KEY", ""))
    if env("ECLIPTIC_PORTAL_URL"):
        values["portal_url"] = env("ECLIPTIC_PORTAL_URL")
    if env("ECLIPTIC_GATEWAY_STATE_DIR"):
        values["gateway_state_dir"] = Path(env("ECLIPTIC_GATEWAY_STATE_DIR", ""))
    values.update(_checked_gateway_settings())
    return values


class InvalidSetting(ValueError):
    """An ``ECLIPTIC_*`` variable whose value cannot be used; the message says what to set."""

    code = "invalid_setting"


_PEER_URL = re.compile(
    r"^(?:http://)?(?P<host>[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])"
    r":(?P<port>[0-9]{1,5})/?$"
)


class _GatewayEnv(BaseModel):
    """The gateway variables with a fixed vocabulary or range, checked before it starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    peer_url: Annotated[str, Field(max_length=300)] | None = None
    peer_stale_s: Annotated[float, Field(ge=2, le=600)] = 5.0
    ssh_server: Literal["tunneld"] | None = None
    """Retired: tunneld is the only SSH endpoint. ``tunneld`` is accepted; anything else
    (``openssh``) is refused with what to do."""

    @field_validator("ssh_server", mode="before")
    @classmethod
    def _only_tunneld(cls, value: object) -> object:
        if value not in (None, "tunneld"):
            raise ValueError(
                "the openssh endpoint was removed; tunneld is the SSH endpoint now (it needs "
                "about 70 KiB per idle tunnel, against 1.8 MiB): unset this variable"
            )
        return value

    @field_validator("peer_url")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, port = parse_peer_url(value)
        return f"{host}:{port}"


def parse_peer_url(value: str) -> tuple[str, int]:
    """``(host, port)`` of a peer URL setting (``host:port``, ``[v6]:port`` or
    ``http://host:port``); the host keeps IPv6 brackets and is lowercase."""
    match = _PEER_URL.match(value.strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError("give host:port (or http://host:port), e.g. 10.0.0.5:8482")
    host = match["host"].lower()
    if host in ("0.0.0.0", "[::]"):
        raise ValueError("0.0.0.0 and :: are not addresses a peer can reach: give this machine's")
    return host, int(match["port"])


def _checked_gateway_settings() -> dict[str, object]:
    names = {
        "peer_url": "ECLIPTIC_GATEWAY_PEER_URL",
        "peer_stale_s": "ECLIPTIC_GATEWAY_PEER_STALE_S",
        "ssh_server": "ECLIPTIC_GATEWAY_SSH_SERVER",
    }
    given = {field: os.environ[var] for field, var in names.items() if os.environ.get(var)}
    try:
        parsed = _GatewayEnv.model_validate(given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{names[str(e['loc'][0])]}={given.get(str(e['loc'][0]))!r}: {e['msg']}"
            for e in exc.errors()
        )
        raise InvalidSetting(problems) from None
    return {
        "gateway_peer_url": parsed.peer_url,
        "gateway_peer_stale_s": parsed.peer_stale_s,
    }
