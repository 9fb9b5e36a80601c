"""A typed Python client of the Ecliptic REST API.

    from ecliptic.client import Client, ServerNic

    with Client.from_config() as c:  # the credentials 'ecliptic login' saved
        c.servers.create("web", flavor="m1.small", networks=[ServerNic(network="data")])
        c.servers.wait("web")
        print(c.servers.exec("web", ["hostname"]).stdout)

        c.leases.create(name="train", duration="48h", reservations=[
            HostReservationIn(kind="host", count=2, where='gpu_model == "A100"')])
        c.leases.wait("train")
        c.servers.create("node-1", flavor="bm.gpu", lease="train")

Methods return the pydantic models of ``ecliptic.api.schemas`` (re-exported here) and
send request bodies built from the same models, so a bad field is refused before it
leaves the machine, with the same message the API would give. Every refusal raises
``ApiError`` with the problem document's ``status``, ``code``, ``detail`` and ``errors``;
a server that cannot be reached raises ``ApiError`` with ``code == "unreachable"``.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
import platformdirs
from pydantic import BaseModel, TypeAdapter, ValidationError

from ecliptic import __version__
from ecliptic.api.schemas import (
    BackendStatus,
    BalanceOut,
    BenchmarkOut,
    CalendarRowOut,
    CompareOut,
    ConsoleLog,
    CreditAllocate,
    DeletedServerOut,
    EventOut,
    ExecRequest,
    ExecResult,
    FindRequest,
    FlavorCreate,
    FlavorOut,
    FlavorReservationIn,
    GcResult,
    HostConvert,
    HostOut,
    HostReservationIn,
    ImageLog,
    ImageOut,
    KindOut,
    LeaseCreate,
    LeaseOut,
    LeaseUpdate,
    LedgerOut,
    LoginRequest,
    MembershipOut,
    MembershipSet,
    NetworkCreate,
    NetworkOut,
    Page,
    PlatformAccessSet,
    PlatformCreate,
    PlatformOut,
    PlatformPatch,
    PlatformPlanOut,
    PlatformServiceOut,
    PlatformTypeCheck,
    PlatformTypeOut,
    PlatformTypeText,
    PoolHostOut,
    PortCreate,
    PortOut,
    QuotaOut,
    QuotaSet,
    ResultsOut,
    SecurityGroupCreate,
    SecurityGroupOut,
    SecurityGroupRuleCreate,
    SecurityGroupRuleOut,
    ServerCreate,
    ServerNic,
    ServerOut,
    ServerSecurityGroups,
    ServiceCreate,
    ServiceOut,
    ServiceUpdate,
    SetOut,
    SliceReservationIn,
    SshKeyCreate,
    SshKeyOut,
    SubnetCreate,
    SubnetOut,
    TenancyCreate,
    TenancyOut,
    TokenCreate,
    TokenOut,
    TunnelTokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
    WhoAmI,
    WindowOut,
)
from ecliptic.files import write_atomic

__all__ = [
    "ApiError",
    "BackendStatus",
    "BalanceOut",
    "CalendarRowOut",
    "Client",
    "ClientError",
    "ConfigError",
    "Credentials",
    "CreditAllocate",
    "ExecResult",
    "FieldError",
    "FindRequest",
    "FlavorReservationIn",
    "HostReservationIn",
    "LeaseCreate",
    "LeaseOut",
    "LeaseUpdate",
    "LedgerOut",
    "NetworkOut",
    "Page",
    "PortOut",
    "ServerNic",
    "ServerOut",
    "SliceReservationIn",
    "WaitError",
    "WhoAmI",
    "WindowOut",
    "credentials_path",
    "delete_credentials",
    "load_credentials",
    "save_credentials",
]

API_PREFIX = "/api/v1"
DEFAULT_URL = "http://127.0.0.1:8470"
"""Where ``ecliptic serve`` listens unless told otherwise."""
POLL_START_S = 0.02
"""First pause between two looks at an object being waited for."""
POLL_CAP_S = 0.5
"""Longest pause between two looks."""
EXEC_MARGIN_S = 30.0
"""How much longer than the command's own timeout the client waits for an exec answer."""

M = TypeVar("M")
Phase = str

# -- errors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    """What is wrong with one field of a request."""

    field: str
    """Dotted path of the field (``flavor``, ``networks.0.network``, ``query.marker``)."""
    msg: str
    """What to change."""


class ClientError(Exception):
    """Base of every error this module raises; ``code`` is stable, ``detail`` is for people."""

    code: str = "error"

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class ApiError(ClientError):
    """The API refused a request (``status`` 4xx/5xx) or could not be reached (``status`` 0)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(code, detail)
        self.status = status
        self.errors = errors or []

    def __repr__(self) -> str:
        return f"ApiError(status={self.status}, code={self.code!r}, detail={self.detail!r})"


class WaitError(ClientError):
    """An object did not reach the phase waited for: it timed out, failed or is going away.

    ``code`` is ``wait_timeout``, ``phase_error`` (the object went to ERROR),
    ``deleting`` or, for leases, ``ended`` (ENDING or ENDED); ``last`` is the object as
    last seen.
    """

    def __init__(self, code: str, detail: str, last: BaseModel | None = None) -> None:
        super().__init__(code, detail)
        self.last = last


class ConfigError(ClientError):
    """The saved credentials cannot be read or written."""


def _field_of(err: dict[str, Any]) -> str:
    if err.get("field"):
        return str(err["field"])
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    return ".".join(loc) or "body"


def _problem(resp: httpx.Response, url: str) -> ApiError:
    """An ``ApiError`` from an error response, problem document or not."""
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or "detail" not in doc:
        text = resp.text.strip().replace("\n", " ")[:200]
        return ApiError(
            resp.status_code,
            "http_error",
            f"{url} answered HTTP {resp.status_code} {resp.reason_phrase}"
            + (f": {text}" if text else ""),
        )
    errors = [
        FieldError(_field_of(e), str(e.get("msg", "invalid")))
        for e in doc.get("errors") or []
        if isinstance(e, dict)
    ]
    detail = doc["detail"]
    if not isinstance(detail, str):  # FastAPI's own shape, should a handler be missing
        detail = json.dumps(detail)
    return ApiError(
        int(doc.get("status") or resp.status_code),
        str(doc.get("code") or "http_error"),
        detail,
        errors,
    )


def _invalid(exc: ValidationError) -> ApiError:
    """The API's 422 for a body refused before it was sent."""
    errors = []
    for e in exc.errors():
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            msg = "unknown field"
        errors.append(FieldError(_field_of({"loc": e.get("loc", ())}), msg))
    detail = "; ".join(f"{x.field}: {x.msg}" for x in errors)
    return ApiError(422, "invalid_input", detail, errors)


def _body(model: type[BaseModel], **fields: Any) -> dict[str, Any]:
    """A request body validated by its schema; fields left as None take the API's default."""
    try:
        obj = model(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise _invalid(exc) from None
    return obj.model_dump(mode="json", exclude_unset=True)


@lru_cache(maxsize=64)
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


# -- saved credentials ----------------------------------------------------------------

_PROFILE_RE = re.compile(r"^[A-Za-z0-9_-]{1,63}$")


@dataclass(frozen=True)
class Credentials:
    """What ``ecliptic login`` saves: where the API is and the token to use there."""

    url: str
    """Base URL of the API (without ``/api/v1``)."""
    token: str | None = None
    """Bearer token."""
    tenancy: str | None = None
    """Tenancy requests act in; None to let the API pick the user's only one."""
    user: str | None = None
    """User name the token belongs to."""
    token_id: str | None = None
    """Id of the token, so that ``ecliptic logout`` can revoke it."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Fields this version does not know, kept on rewrite."""


def credentials_path(profile: str | None = None) -> Path:
    """Where a profile's credentials live: ``<user config dir>/ecliptic/credentials.json``."""
    base = Path(platformdirs.user_config_dir("ecliptic"))
    if profile in (None, "", "default"):
        return base / "credentials.json"
    assert profile is not None
    if not _PROFILE_RE.match(profile):
        raise ConfigError(
            "bad_profile",
            f"'{profile}' is not a valid profile name: use letters, digits, '-' and '_'",
        )
    return base / f"credentials-{profile}.json"


def load_credentials(profile: str | None = None) -> Credentials | None:
    """The saved credentials of a profile, or None when there are none."""
    path = credentials_path(profile)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            "bad_credentials",
            f"cannot read {path} ({exc}); remove it or run 'ecliptic login' again",
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("url"), str):
        raise ConfigError("bad_credentials", f"{path} has no 'url'; run 'ecliptic login' again")
    known = {"url", "token", "tenancy", "user", "token_id"}
    return Credentials(
        url=doc["url"],
        token=doc.get("token"),
        tenancy=doc.get("tenancy"),
        user=doc.get("user"),
        token_id=doc.get("token_id"),
        extra={k: v for k, v in doc.items() if k not in known},
    )


def save_credentials(creds: Credentials, profile: str | None = None) -> Path:
    """Write credentials readable by their owner only (mode 0600), atomically."""
    path = credentials_path(profile)
    doc = {**creds.extra, **{k: v for k, v in asdict(creds).items() if k != "extra"}}
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, json.dumps(doc, indent=2) + "\n", mode=0o600)
    except OSError as exc:
        raise ConfigError("bad_credentials", f"cannot save credentials in {path}: {exc}") from None
    return path


def delete_credentials(profile: str | None = None) -> bool:
    """Remove a profile's saved credentials; False when there were none."""
    path = credentials_path(profile)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError("bad_credentials", f"cannot remove {path}: {exc}") from None
    return True


def normalize_url(url: str) -> str:
    """``host:port``, ``http://host:port/`` and ``.../api/v1`` all become ``http://host:port``."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    url = url.rstrip("/")
    return url.removesuffix(API_PREFIX).rstrip("/")


# -- waiting --------------------------------------------------------------------------

W = TypeVar("W", ServerOut, NetworkOut, LeaseOut, PlatformOut)

_NO_WAY_BACK = {
    "DELETING": ("deleting", "is being deleted"),
    "ENDING": ("ended", "is ending"),
    "ENDED": ("ended", "has ended"),
}
"""Phases an object never leaves for another: waiting for any other phase is pointless."""


def _wait_phase(
    kind: str,
    fetch: Callable[[], W],
    phases: Collection[Phase],
    timeout: float,
    on_change: Callable[[W], None] | None,
) -> W:
    want = {p.upper() for p in phases}
    deadline = time.monotonic() + timeout
    delay = POLL_START_S
    seen: tuple[str, str] | None = None
    while True:
        obj = fetch()
        if (obj.phase, obj.phase_reason) != seen:
            seen = (obj.phase, obj.phase_reason)
            delay = POLL_START_S  # something moves: look again soon
            if on_change is not None:
                on_change(obj)
        if obj.phase in want:
            return obj
        if obj.phase in ("ERROR", "FAILED") and obj.phase not in want:
            hint = (
                f"; see 'ecliptic {kind} events {obj.name}'"
                if kind in ("server", "lease", "platform")
                else ""
            )
            reason = obj.phase_reason or "no reason given"
            raise WaitError(
                "phase_error", f"{kind} '{obj.name}' went to {obj.phase}: {reason}{hint}", obj
            )
        if obj.phase in _NO_WAY_BACK:
            code, what = _NO_WAY_BACK[obj.phase]
            raise WaitError(
                code,
                f"{kind} '{obj.name}' {what}; it will not become " + " or ".join(sorted(want)),
                obj,
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitError(
                "wait_timeout",
                f"{kind} '{obj.name}' is still {obj.phase} after {timeout:g} s"
                + (f" ({obj.phase_reason})" if obj.phase_reason else "")
                + "; wait longer with --timeout",
                obj,
            )
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, POLL_CAP_S)


def _wait_gone(
    kind: str,
    ref: str,
    fetch: Callable[[], W],
    timeout: float,
    on_change: Callable[[W], None] | None,
) -> None:
    deadline = time.monotonic() + timeout
    delay = POLL_START_S
    seen: tuple[str, str] | None = None
    last: W | None = None
    while True:
        try:
            last = fetch()
        except ApiError as exc:
            if exc.status == 404:
                return
            raise
        if (last.phase, last.phase_reason) != seen:
            seen = (last.phase, last.phase_reason)
            delay = POLL_START_S
            if on_change is not None:
                on_change(last)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitError(
                "wait_timeout",
                f"{kind} '{ref}' is still there ({last.phase}) after {timeout:g} s"
                + (f": {last.phase_reason}" if last.phase_reason else ""),
                last,
            )
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, POLL_CAP_S)


# -- the client -----------------------------------------------------------------------


def _q(ref: str) -> str:
    return quote(ref, safe="")


class Client:
    """A connection to one Ecliptic API, acting as one user in (at most) one tenancy."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        tenancy: str | None = None,
        timeout: float = 30,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = normalize_url(url)
        """Base URL of the API."""
        self.token = token
        """Bearer token sent with every request (``login`` sets it)."""
        self.tenancy = tenancy
        """Tenancy sent in ``X-Ecliptic-Tenancy``; None lets the API pick the only one."""
        self.timeout = timeout
        """Seconds to wait for an answer."""
        self._http = httpx.Client(
            base_url=self.url + API_PREFIX,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": f"ecliptic-client/{__version__}"},
        )
        self.tenancies = _Tenancies(self)
        self.members = _Members(self)
        self.users = _Users(self)
        self.tokens = _Tokens(self)
        self.flavors = _Flavors(self)
        self.hosts = _Hosts(self)
        self.networks = _Networks(self)
        self.subnets = _Subnets(self)
        self.ports = _Ports(self)
        self.servers = _Servers(self)
        self.images = _Images(self)
        self.security_groups = _SecurityGroups(self)
        self.leases = _Leases(self)
        self.availability = _Availability(self)
        self.credits = _Credits(self)
        self.services = _Services(self)
        self.ssh_keys = _SshKeys(self)
        self.quotas = _Quotas(self)
        self.platform_types = _PlatformTypes(self)
        self.platforms = _Platforms(self)
        self.benchmarks = _Benchmarks(self)

    @classmethod
    def from_config(
        cls,
        profile: str | None = None,
        *,
        url: str | None = None,
        tenancy: str | None = None,
        timeout: float = 30,
    ) -> Client:
        """A client from the saved credentials; ``ECLIPTIC_URL``/``_TOKEN``/``_TENANCY`` win.

        Explicit ``url`` and ``tenancy`` win over both. The saved token is only sent to
        the URL it was issued by: pointed elsewhere, the client sends ``ECLIPTIC_TOKEN``
        or nothing.
        """
        creds = load_credentials(profile or os.environ.get("ECLIPTIC_PROFILE") or None)
        target = url or os.environ.get("ECLIPTIC_URL") or (creds.url if creds else DEFAULT_URL)
        token = os.environ.get("ECLIPTIC_TOKEN") or None
        same_api = creds is not None and normalize_url(creds.url) == normalize_url(target)
        if token is None and creds is not None and same_api:
            token = creds.token
        chosen = tenancy or os.environ.get("ECLIPTIC_TENANCY") or (creds.tenancy if creds else None)
        return cls(target, token=token, tenancy=chosen, timeout=timeout)

    # -- plumbing ----------------------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, tenancy={self.tenancy!r})"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json, application/problem+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.tenancy:
            headers["X-Ecliptic-Tenancy"] = self.tenancy
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send one request under ``/api/v1``; raise ``ApiError`` unless it succeeded."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self._http.request(
                method,
                path,
                json=json,
                params=clean or None,
                headers=self._headers(),
                timeout=timeout if timeout is not None else self.timeout,
            )
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                raise self._unreachable(exc) from None
            raise ApiError(
                0,
                "timeout",
                f"Ecliptic at {self.url} did not answer within "
                f"{timeout if timeout is not None else self.timeout:g} s",
            ) from None
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise self._unreachable(exc) from None
        if resp.status_code >= 400:
            raise _problem(resp, self.url)
        return resp

    def _unreachable(self, exc: Exception) -> ApiError:
        return ApiError(
            0,
            "unreachable",
            f"cannot reach Ecliptic at {self.url}: is `ecliptic serve` running? ({exc})",
        )

    def _call(
        self,
        tp: Any,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        resp = self.request(method, path, json=json, params=params, timeout=timeout)
        try:
            return _adapter(tp).validate_python(resp.json())
        except (ValueError, ValidationError):
            raise ApiError(
                resp.status_code,
                "bad_response",
                f"{self.url}{API_PREFIX}{path} gave an answer this client does not "
                "understand: is that an Ecliptic API of the same version?",
            ) from None

    def _all(self, item: Any, path: str, *, params: dict[str, Any] | None = None) -> Any:
        """Every item of a list, page after page (each answer is ``{items, next}``)."""
        out: list[Any] = []
        marker: str | None = None
        while True:
            page = self._call(Page[item], "GET", path, params={**(params or {}), "marker": marker})
            out.extend(page.items)
            if page.next is None:
                return out
            marker = page.next

    # -- auth and meta -----------------------------------------------------------------

    def login(
        self,
        username: str,
        password: str,
        *,
        token_name: str | None = None,
        ttl_hours: int | None = None,
    ) -> TokenOut:
        """Exchange a user name and password for a token, and use it from now on."""
        body = _body(
            LoginRequest,
            username=username,
            password=password,
            token_name=token_name,
            ttl_hours=ttl_hours,
        )
        out: TokenOut = self._call(TokenOut, "POST", "/auth/login", json=body)
        self.token = out.secret
        return out

    def whoami(self) -> WhoAmI:
        """The signed-in user and the tenancy requests act in."""
        out: WhoAmI = self._call(WhoAmI, "GET", "/auth/whoami")
        return out

    def health(self) -> dict[str, str]:
        """Liveness of the API and its database (no sign-in needed)."""
        out: dict[str, str] = self._call(dict[str, str], "GET", "/health")
        return out

    def backend_status(self) -> BackendStatus:
        """What the backend really holds; unknown resources are orphans (administrators)."""
        out: BackendStatus = self._call(BackendStatus, "GET", "/backend/status")
        return out

    def backend_gc(self) -> GcResult:
        """Remove the backend's orphans (administrators)."""
        out: GcResult = self._call(GcResult, "POST", "/backend/gc")
        return out


class _Group:
    def __init__(self, client: Client) -> None:
        self._c = client


class _Tenancies(_Group):
    """Tenancies."""

    def list(self) -> builtins.list[TenancyOut]:
        """Tenancies you belong to (all of them, for administrators)."""
        out: builtins.list[TenancyOut] = self._c._all(TenancyOut, "/tenancies")
        return out

    def create(self, name: str, description: str | None = None) -> TenancyOut:
        """Create a tenancy (administrators)."""
        body = _body(TenancyCreate, name=name, description=description)
        out: TenancyOut = self._c._call(TenancyOut, "POST", "/tenancies", json=body)
        return out

    def delete(self, ref: str) -> None:
        """Delete an empty tenancy (administrators)."""
        self._c.request("DELETE", f"/tenancies/{_q(ref)}")


class _Members(_Group):
    """Members of tenancies."""

    def list(self, tenancy: str) -> builtins.list[MembershipOut]:
        """Members of a tenancy."""
        out: builtins.list[MembershipOut] = self._c._all(
            MembershipOut, f"/tenancies/{_q(tenancy)}/members"
        )
        return out

    def set(
        self, tenancy: str, user: str, role: Literal["member", "admin"] = "member"
    ) -> MembershipOut:
        """Add a user to a tenancy, or change their role."""
        body = _body(MembershipSet, user=user, role=role)
        out: MembershipOut = self._c._call(
            MembershipOut, "PUT", f"/tenancies/{_q(tenancy)}/members", json=body
        )
        return out

    def remove(self, tenancy: str, user: str) -> None:
        """Remove a user from a tenancy."""
        self._c.request("DELETE", f"/tenancies/{_q(tenancy)}/members/{_q(user)}")


class _Users(_Group):
    """Users (administrators)."""

    def list(self) -> builtins.list[UserOut]:
        """Every user."""
        out: builtins.list[UserOut] = self._c._all(UserOut, "/users")
        return out

    def create(
        self,
        name: str,
        password: str | None = None,
        *,
        email: str | None = None,
        is_admin: bool = False,
    ) -> UserOut:
        """Create a user; without a password they can only use tokens made for them."""
        body = _body(UserCreate, name=name, password=password, email=email, is_admin=is_admin)
        out: UserOut = self._c._call(UserOut, "POST", "/users", json=body)
        return out

    def set_disabled(self, ref: str, disabled: bool) -> UserOut:
        """Disable a user (their tokens and sessions end at once) or enable them again."""
        body = _body(UserUpdate, disabled=disabled)
        out: UserOut = self._c._call(UserOut, "PATCH", f"/users/{_q(ref)}", json=body)
        return out

    def delete(self, ref: str) -> None:
        """Remove a user; their tokens and sessions end at once."""
        self._c.request("DELETE", f"/users/{_q(ref)}")


class _Quotas(_Group):
    """On-demand quotas."""

    def show(self, tenancy: str | None = None) -> QuotaOut:
        """Your tenancy's quota and use (administrators: ``tenancy``'s)."""
        out: QuotaOut = self._c._call(QuotaOut, "GET", "/quota", params={"tenancy": tenancy})
        return out

    def set(self, tenancy: str, **limits: int | None) -> QuotaOut:
        """Set limits (servers, vcpus, memory_mb, gpus; None: the site default)."""
        body = QuotaSet(**limits).model_dump(exclude_unset=True)
        out: QuotaOut = self._c._call(QuotaOut, "PUT", f"/tenancies/{_q(tenancy)}/quota", json=body)
        return out


class _Tokens(_Group):
    """Your own tokens."""

    def list(self) -> builtins.list[TokenOut]:
        """Your tokens (never their secrets)."""
        out: builtins.list[TokenOut] = self._c._all(TokenOut, "/tokens")
        return out

    def create(self, name: str, ttl_hours: int | None = None) -> TokenOut:
        """A new token; its ``secret`` is in this answer only."""
        body = _body(TokenCreate, name=name, ttl_hours=ttl_hours)
        out: TokenOut = self._c._call(TokenOut, "POST", "/tokens", json=body)
        return out

    def revoke(self, token_id: str) -> None:
        """Revoke one of your tokens."""
        self._c.request("DELETE", f"/tokens/{_q(token_id)}")


class _Flavors(_Group):
    """Flavors."""

    def list(self) -> builtins.list[FlavorOut]:
        """Every flavor, smallest first."""
        out: builtins.list[FlavorOut] = self._c._all(FlavorOut, "/flavors")
        return out

    def create(self, flavor: FlavorCreate | None = None, **fields: Any) -> FlavorOut:
        """Create a flavor from a ``FlavorCreate`` or its fields (administrators)."""
        body = (
            flavor.model_dump(mode="json", exclude_unset=True)
            if flavor is not None
            else _body(FlavorCreate, **fields)
        )
        out: FlavorOut = self._c._call(FlavorOut, "POST", "/flavors", json=body)
        return out

    def delete(self, ref: str) -> None:
        """Delete a flavor no server uses (administrators)."""
        self._c.request("DELETE", f"/flavors/{_q(ref)}")


class _Hosts(_Group):
    """Hosts of the inventory (administrators)."""

    def list(self) -> builtins.list[HostOut]:
        """Every host with what is in use on it."""
        out: builtins.list[HostOut] = self._c._all(HostOut, "/hosts")
        return out

    def set_state(self, name: str, state: Literal["up", "down", "maintenance"]) -> HostOut:
        """Mark a host up, down or in maintenance."""
        out: HostOut = self._c._call(HostOut, "PATCH", f"/hosts/{_q(name)}", json={"state": state})
        return out

    def pool(self) -> builtins.list[PoolHostOut]:
        """The bare-metal-or-hypervisor pool: each host's role and what needs it."""
        out: builtins.list[PoolHostOut] = self._c._all(PoolHostOut, "/hosts/pool")
        return out

    def convert(self, name: str, to: Literal["hypervisor", "baremetal", "auto"]) -> HostOut:
        """Make a pool host a hypervisor or bare metal (held so), or give it back to the
        policy (``auto``)."""
        body = _body(HostConvert, to=to)
        out: HostOut = self._c._call(HostOut, "POST", f"/hosts/{_q(name)}/convert", json=body)
        return out

    def drain(self, name: str) -> HostOut:
        """Drain a hypervisor: no new VMs on it, its servers moved to other hypervisors."""
        out: HostOut = self._c._call(HostOut, "POST", f"/hosts/{_q(name)}/drain")
        return out

    def events(self, name: str) -> builtins.list[EventOut]:
        """What happened to a host's role in the pool, oldest first."""
        out: builtins.list[EventOut] = self._c._all(EventOut, f"/hosts/{_q(name)}/events")
        return out


class _Networks(_Group):
    """Networks of your tenancy."""

    def list(self) -> builtins.list[NetworkOut]:
        """Networks, by name."""
        out: builtins.list[NetworkOut] = self._c._all(NetworkOut, "/networks")
        return out

    def create(self, name: str, cidr: str | None = None) -> NetworkOut:
        """Create a network with one subnet (a free /24 unless ``cidr`` is given)."""
        body = _body(NetworkCreate, name=name, cidr=cidr)
        out: NetworkOut = self._c._call(NetworkOut, "POST", "/networks", json=body)
        return out

    def get(self, ref: str) -> NetworkOut:
        """One network by name or id."""
        out: NetworkOut = self._c._call(NetworkOut, "GET", f"/networks/{_q(ref)}")
        return out

    def delete(self, ref: str) -> NetworkOut:
        """Ask for a network to be deleted; it goes to DELETING, then disappears."""
        out: NetworkOut = self._c._call(NetworkOut, "DELETE", f"/networks/{_q(ref)}")
        return out

    def wait(
        self,
        ref: str,
        phases: Collection[Phase] = frozenset({"ACTIVE"}),
        timeout: float = 300,
        on_change: Callable[[NetworkOut], None] | None = None,
    ) -> NetworkOut:
        """Poll until the network is in one of ``phases``; ``WaitError`` if it cannot get there."""
        return _wait_phase("network", lambda: self.get(ref), phases, timeout, on_change)

    def wait_deleted(
        self,
        ref: str,
        timeout: float = 300,
        on_change: Callable[[NetworkOut], None] | None = None,
    ) -> None:
        """Poll until the network is gone."""
        _wait_gone("network", ref, lambda: self.get(ref), timeout, on_change)


class _Subnets(_Group):
    """Subnets of your tenancy's networks."""

    def list(self) -> builtins.list[SubnetOut]:
        """Every subnet."""
        out: builtins.list[SubnetOut] = self._c._all(SubnetOut, "/subnets")
        return out

    def create(self, name: str, network: str, cidr: str | None = None) -> SubnetOut:
        """Add a range to a network (picked for you unless ``cidr`` is given)."""
        body = _body(SubnetCreate, name=name, network=network, cidr=cidr)
        out: SubnetOut = self._c._call(SubnetOut, "POST", "/subnets", json=body)
        return out

    def delete(self, ref: str) -> None:
        """Remove a subnet that no port uses (not a network's last one)."""
        self._c.request("DELETE", f"/subnets/{_q(ref)}")


class _Ports(_Group):
    """Ports of your tenancy."""

    def list(self) -> builtins.list[PortOut]:
        """Every port, oldest first."""
        out: builtins.list[PortOut] = self._c._all(PortOut, "/ports")
        return out

    def create(
        self,
        network: str,
        name: str | None = None,
        vnic_type: Literal["normal", "direct"] = "normal",
    ) -> PortOut:
        """Reserve an address on a network, to give to a server later."""
        body = _body(PortCreate, network=network, name=name, vnic_type=vnic_type)
        out: PortOut = self._c._call(PortOut, "POST", "/ports", json=body)
        return out

    def delete(self, ref: str) -> None:
        """Release an unattached port."""
        self._c.request("DELETE", f"/ports/{_q(ref)}")


class _SecurityGroups(_Group):
    """Security groups of your tenancy."""

    def list(self) -> builtins.list[SecurityGroupOut]:
        """Every group, ``default`` included."""
        out: builtins.list[SecurityGroupOut] = self._c._all(SecurityGroupOut, "/security-groups")
        return out

    def get(self, ref: str) -> SecurityGroupOut:
        """One group by name or id."""
        out: SecurityGroupOut = self._c._call(
            SecurityGroupOut, "GET", f"/security-groups/{_q(ref)}"
        )
        return out

    def create(self, name: str, description: str = "") -> SecurityGroupOut:
        """A new group (no rules: nothing in or out)."""
        body = _body(SecurityGroupCreate, name=name, description=description or None)
        out: SecurityGroupOut = self._c._call(
            SecurityGroupOut, "POST", "/security-groups", json=body
        )
        return out

    def delete(self, ref: str) -> None:
        """Delete a group no port uses."""
        self._c.request("DELETE", f"/security-groups/{_q(ref)}")

    def add_rule(self, ref: str, **fields: Any) -> SecurityGroupRuleOut:
        """Add a rule (``direction``, ``protocol``, ``port_min``, ``port_max``,
        ``remote_cidr`` or ``remote_group``, ``description``)."""
        body = _body(SecurityGroupRuleCreate, **fields)
        out: SecurityGroupRuleOut = self._c._call(
            SecurityGroupRuleOut, "POST", f"/security-groups/{_q(ref)}/rules", json=body
        )
        return out

    def delete_rule(self, ref: str, rule_id: str) -> None:
        """Remove one rule."""
        self._c.request("DELETE", f"/security-groups/{_q(ref)}/rules/{_q(rule_id)}")

    def set_for_server(self, server: str, names: builtins.list[str]) -> builtins.list[str]:
        """Replace the groups of every port of a server."""
        body = _body(ServerSecurityGroups, security_groups=names)
        out: ServerSecurityGroups = self._c._call(
            ServerSecurityGroups, "PUT", f"/servers/{_q(server)}/security-groups", json=body
        )
        return list(out.security_groups)


class _Images(_Group):
    """Images servers boot from."""

    def list(self) -> builtins.list[ImageOut]:
        """Every image, built or not."""
        out: builtins.list[ImageOut] = self._c._all(ImageOut, "/images")
        return out

    def get(self, name: str) -> ImageOut:
        """One image."""
        out: ImageOut = self._c._call(ImageOut, "GET", f"/images/{_q(name)}")
        return out

    def build(self, name: str) -> ImageOut:
        """Start building an image (administrators); it is ``built`` when done."""
        out: ImageOut = self._c._call(ImageOut, "POST", f"/images/{_q(name)}/build")
        return out

    def log(self, name: str) -> str:
        """The log of its build in progress, its last failed build, or its build."""
        out: ImageLog = self._c._call(ImageLog, "GET", f"/images/{_q(name)}/log")
        return out.log

    def delete(self, name: str) -> None:
        """Remove an image's built layers (administrators); refused while servers use it."""
        self._c.request("DELETE", f"/images/{_q(name)}")


class _Servers(_Group):
    """Servers of your tenancy."""

    def list(
        self,
        *,
        name: str | None = None,
        phase: str | None = None,
        host: str | None = None,
        flavor: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> Page[ServerOut]:
        """One page of servers, oldest first; pass its ``next`` as ``marker`` for the next."""
        params = {
            "name": name,
            "phase": phase.upper() if phase else None,
            "host": host,
            "flavor": flavor,
            "limit": limit,
            "marker": marker,
        }
        out: Page[ServerOut] = self._c._call(Page[ServerOut], "GET", "/servers", params=params)
        return out

    def iter(
        self,
        *,
        name: str | None = None,
        phase: str | None = None,
        host: str | None = None,
        flavor: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[ServerOut]:
        """Every matching server, fetching pages as needed."""
        marker: str | None = None
        while True:
            page = self.list(
                name=name, phase=phase, host=host, flavor=flavor, limit=page_size, marker=marker
            )
            yield from page.items
            if not page.next:
                return
            marker = page.next

    def create(
        self,
        name: str,
        flavor: str,
        networks: builtins.list[ServerNic] | None = None,
        *,
        lease: str | None = None,
        reservation: str | None = None,
        preemptible: bool = False,
        image: str | None = None,
        security_groups: builtins.list[str] | None = None,
    ) -> ServerOut:
        """Create a server (on the tenancy's ``default`` network unless ``networks`` say),
        booting from ``image`` (``base`` unless given).

        On demand by default; inside a lease with ``lease`` (and ``reservation``, when the
        lease has several), or ``preemptible``: on room nobody reserved, stopped when a
        lease needs it.
        """
        nics = [n.model_dump(mode="json", exclude_unset=True) for n in networks or []]
        body = _body(
            ServerCreate,
            name=name,
            flavor=flavor,
            networks=nics or None,
            lease=lease,
            reservation=reservation,
            preemptible=preemptible or None,
            image=image,
            security_groups=security_groups or None,
        )
        out: ServerOut = self._c._call(ServerOut, "POST", "/servers", json=body)
        return out

    def get(self, ref: str) -> ServerOut:
        """One server by name or id."""
        out: ServerOut = self._c._call(ServerOut, "GET", f"/servers/{_q(ref)}")
        return out

    def delete(self, ref: str) -> ServerOut:
        """Ask for a server to be deleted; it goes to DELETING, then disappears."""
        out: ServerOut = self._c._call(ServerOut, "DELETE", f"/servers/{_q(ref)}")
        return out

    def log(self, ref: str, tail_bytes: int | None = None, after: int | None = None) -> ConsoleLog:
        """The end of the console log, or what follows ``after`` (a previous ``next``)."""
        out: ConsoleLog = self._c._call(
            ConsoleLog,
            "GET",
            f"/servers/{_q(ref)}/log",
            params={"tail_bytes": tail_bytes, "after": after},
        )
        return out

    def deleted(self, limit: int | None = None) -> builtins.list[DeletedServerOut]:
        """Servers deleted within the retention period, latest first, with why they went."""
        page: Page[DeletedServerOut] = self._c._call(
            Page[DeletedServerOut], "GET", "/deleted-servers", params={"limit": limit}
        )
        return page.items

    def events(self, ref: str) -> builtins.list[EventOut]:
        """The server's latest phase changes, oldest first (a deleted server's too, while it
        is kept)."""
        out: builtins.list[EventOut] = self._c._all(EventOut, f"/servers/{_q(ref)}/events")
        return out

    def exec(
        self,
        ref: str,
        argv: builtins.list[str],
        timeout: float = 60.0,
        stdin: str | bytes | None = None,
    ) -> ExecResult:
        """Run a command inside the server and wait for it (at most ``timeout`` seconds)."""
        if isinstance(stdin, bytes):
            stdin = stdin.decode(errors="replace")
        body = _body(ExecRequest, argv=argv, timeout=timeout, stdin=stdin)
        out: ExecResult = self._c._call(
            ExecResult,
            "POST",
            f"/servers/{_q(ref)}/exec",
            json=body,
            timeout=max(self._c.timeout, timeout + EXEC_MARGIN_S),
        )
        return out

    def wait(
        self,
        ref: str,
        phases: Collection[Phase] = frozenset({"ACTIVE"}),
        timeout: float = 300,
        on_change: Callable[[ServerOut], None] | None = None,
    ) -> ServerOut:
        """Poll until the server is in one of ``phases``; ``WaitError`` if it cannot get there.

        Polls after 20 ms, doubling up to 500 ms, and calls ``on_change`` with the
        server each time its phase or reason changes.
        """
        return _wait_phase("server", lambda: self.get(ref), phases, timeout, on_change)

    def wait_deleted(
        self,
        ref: str,
        timeout: float = 300,
        on_change: Callable[[ServerOut], None] | None = None,
    ) -> None:
        """Poll until the server is gone (the API answers 404)."""
        _wait_gone("server", ref, lambda: self.get(ref), timeout, on_change)


def _model_body(model: type[BaseModel], obj: BaseModel | None, fields: dict[str, Any]) -> Any:
    """The body of a request given as a model or as its fields (not both)."""
    if obj is not None:
        if fields:
            raise TypeError(f"give a {model.__name__} or its fields, not both")
        if not isinstance(obj, model):
            raise TypeError(f"expected a {model.__name__}, got {type(obj).__name__}")
        return obj.model_dump(mode="json", exclude_unset=True)
    return _body(model, **fields)


def _when(value: datetime | str | None) -> str | None:
    """A time for a query string."""
    return value.isoformat() if isinstance(value, datetime) else value


class _Leases(_Group):
    """Leases of your tenancy: capacity booked for a window, paid for in credits."""

    def list(self, ended: bool = False) -> builtins.list[LeaseOut]:
        """Live leases, soonest first (ended ones too with ``ended``)."""
        out: builtins.list[LeaseOut] = self._c._all(
            LeaseOut, "/leases", params={"ended": "true" if ended else None}
        )
        return out

    def create(self, lease: LeaseCreate | None = None, **fields: Any) -> LeaseOut:
        """Book a lease from a ``LeaseCreate`` or its fields; its cost is charged at once.

        ``ApiError`` 409 ``no_capacity`` when it does not fit, 403 ``insufficient_credits``
        (the detail says what is missing) when the credits do not cover it.
        """
        body = _model_body(LeaseCreate, lease, fields)
        out: LeaseOut = self._c._call(LeaseOut, "POST", "/leases", json=body)
        return out

    def get(self, ref: str) -> LeaseOut:
        """One lease by name or id (with how many servers run in it)."""
        out: LeaseOut = self._c._call(LeaseOut, "GET", f"/leases/{_q(ref)}")
        return out

    def update(self, ref: str, update: LeaseUpdate | None = None, **fields: Any) -> LeaseOut:
        """Move, extend, shorten, grow or shrink a lease; the difference is charged or refunded."""
        body = _model_body(LeaseUpdate, update, fields)
        out: LeaseOut = self._c._call(LeaseOut, "PATCH", f"/leases/{_q(ref)}", json=body)
        return out

    def delete(self, ref: str) -> LeaseOut:
        """End a lease now (cancel it, if it has not started); unused time is refunded.

        Its servers are deleted after the lease's grace period.
        """
        out: LeaseOut = self._c._call(LeaseOut, "DELETE", f"/leases/{_q(ref)}")
        return out

    def retry(self, ref: str) -> LeaseOut:
        """Start a lease in ERROR again (``ApiError`` 409 in any other phase)."""
        out: LeaseOut = self._c._call(LeaseOut, "POST", f"/leases/{_q(ref)}/retry")
        return out

    def end(self, ref: str) -> LeaseOut:
        """End a lease now, as ``delete`` does; its ``cost`` then shows what was kept."""
        out: LeaseOut = self._c._call(LeaseOut, "POST", f"/leases/{_q(ref)}/end")
        return out

    def events(self, ref: str) -> builtins.list[EventOut]:
        """What happened to the lease, and why, oldest first."""
        out: builtins.list[EventOut] = self._c._all(EventOut, f"/leases/{_q(ref)}/events")
        return out

    def wait(
        self,
        ref: str,
        phases: Collection[Phase] = frozenset({"ACTIVE"}),
        timeout: float = 300,
        on_change: Callable[[LeaseOut], None] | None = None,
    ) -> LeaseOut:
        """Poll until the lease is in one of ``phases``; ``WaitError`` if it cannot get there.

        A lease that went to ERROR, or is ENDING or ENDED (unless waited for), raises at once.
        """
        return _wait_phase("lease", lambda: self.get(ref), phases, timeout, on_change)


class _Availability(_Group):
    """When and where capacity is free."""

    def earliest(
        self, request: FindRequest | None = None, **fields: Any
    ) -> builtins.list[WindowOut]:
        """The earliest windows where reservations fit, soonest first (empty: none in horizon)."""
        body = _model_body(FindRequest, request, fields)
        out: builtins.list[WindowOut] = self._c._call(
            list[WindowOut], "POST", "/availability/earliest", json=body
        )
        return out

    def calendar(
        self,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        days: int = 30,
        bucket: str = "1h",
    ) -> builtins.list[CalendarRowOut]:
        """Free and reserved capacity per resource class, in ``bucket``-long time buckets.

        From ``start`` (now) to ``end`` (``days`` later).
        """
        params = {"start": _when(start), "end": _when(end), "days": days, "bucket": bucket}
        out: builtins.list[CalendarRowOut] = self._c._call(
            list[CalendarRowOut], "GET", "/availability/calendar", params=params
        )
        return out


class _Credits(_Group):
    """Credits of your tenancy: allocations of resource-hours and what leases took."""

    def balance(self) -> builtins.list[BalanceOut]:
        """Every allocation with what was granted, charged, refunded and what remains."""
        out: builtins.list[BalanceOut] = self._c._all(BalanceOut, "/credits")
        return out

    def ledger(self, limit: int | None = None) -> builtins.list[LedgerOut]:
        """Credit movements, newest first (the API's default: the latest 200)."""
        page: Page[LedgerOut] = self._c._call(
            Page[LedgerOut], "GET", "/credits/ledger", params={"limit": limit}
        )
        return page.items

    def allocate(
        self, allocation: CreditAllocate | None = None, **fields: Any
    ) -> builtins.list[BalanceOut]:
        """Grant resource-hours to a tenancy for a window (administrators)."""
        body = _model_body(CreditAllocate, allocation, fields)
        out: builtins.list[BalanceOut] = self._c._call(
            list[BalanceOut], "POST", "/credits/allocations", json=body
        )
        return out


class _Services(_Group):
    """Services reached through the tunnel gateway, by subdomain."""

    def create(self, service: ServiceCreate | None = None, **fields: Any) -> ServiceOut:
        """Reserve a subdomain; the answer holds the first association token (shown once)."""
        body = _model_body(ServiceCreate, service, fields)
        out: ServiceOut = self._c._call(ServiceOut, "POST", "/services", json=body)
        return out

    def list(self) -> builtins.list[ServiceOut]:
        """Your tenancy's services."""
        out: builtins.list[ServiceOut] = self._c._all(ServiceOut, "/services")
        return out

    def get(self, ref: str) -> ServiceOut:
        """One service with its access list, keys and live tunnels."""
        out: ServiceOut = self._c._call(ServiceOut, "GET", f"/services/{_q(ref)}")
        return out

    def events(self, ref: str) -> builtins.list[EventOut]:
        """Who changed the service and how (keys bound and revoked, access, tokens)."""
        out: builtins.list[EventOut] = self._c._all(EventOut, f"/services/{_q(ref)}/events")
        return out

    def update(self, ref: str, update: ServiceUpdate | None = None, **fields: Any) -> ServiceOut:
        """Change who may reach a service, or whether it is public."""
        body = _model_body(ServiceUpdate, update, fields)
        out: ServiceOut = self._c._call(ServiceOut, "PATCH", f"/services/{_q(ref)}", json=body)
        return out

    def token(self, ref: str, ttl_minutes: int | None = None) -> TunnelTokenOut:
        """Another single-use association token (for one more client)."""
        body = {"ttl_minutes": ttl_minutes} if ttl_minutes else None
        out: TunnelTokenOut = self._c._call(
            TunnelTokenOut, "POST", f"/services/{_q(ref)}/tokens", json=body
        )
        return out

    def revoke_key(self, ref: str, key_id: str) -> None:
        """Unbind a client's key; its tunnels are cut."""
        self._c.request("DELETE", f"/services/{_q(ref)}/keys/{_q(key_id)}")

    def delete(self, ref: str) -> None:
        """Delete a service."""
        self._c.request("DELETE", f"/services/{_q(ref)}")


class _SshKeys(_Group):
    """Your SSH public keys (they sign you in to the gateway's jump host)."""

    def add(self, name: str, public_key: str) -> SshKeyOut:
        """Register a key."""
        body = SshKeyCreate(name=name, public_key=public_key).model_dump()
        out: SshKeyOut = self._c._call(SshKeyOut, "POST", "/users/me/ssh-keys", json=body)
        return out

    def list(self) -> builtins.list[SshKeyOut]:
        """Your keys."""
        out: builtins.list[SshKeyOut] = self._c._all(SshKeyOut, "/users/me/ssh-keys")
        return out

    def delete(self, ref: str) -> None:
        """Remove a key, by name or id."""
        self._c.request("DELETE", f"/users/me/ssh-keys/{_q(ref)}")


class _PlatformTypes(_Group):
    """The catalogue of platform types."""

    def list(self) -> builtins.list[PlatformTypeOut]:
        """Every platform type on offer."""
        out: builtins.list[PlatformTypeOut] = self._c._all(PlatformTypeOut, "/platform-types")
        return out

    def get(self, name: str) -> PlatformTypeOut:
        """One platform type."""
        out: PlatformTypeOut = self._c._call(PlatformTypeOut, "GET", f"/platform-types/{_q(name)}")
        return out

    def validate(self, text: str) -> PlatformTypeCheck:
        """Check a platform type file's text on the server."""
        out: PlatformTypeCheck = self._c._call(
            PlatformTypeCheck,
            "POST",
            "/platform-types/validate",
            json=_body(PlatformTypeText, text=text),
        )
        return out


class _Platforms(_Group):
    """Platforms of your tenancy."""

    def list(self) -> builtins.list[PlatformOut]:
        """Every platform, by name."""
        out: builtins.list[PlatformOut] = self._c._all(PlatformOut, "/platforms")
        return out

    def create(self, **fields: Any) -> PlatformOut:
        """Create a platform (``name``, ``type``, ``parameters``, ``lease``, ``access``)."""
        out: PlatformOut = self._c._call(
            PlatformOut, "POST", "/platforms", json=_body(PlatformCreate, **fields)
        )
        return out

    def plan(self, **fields: Any) -> PlatformPlanOut:
        """What ``create`` with these fields would make and cost; nothing is made."""
        out: PlatformPlanOut = self._c._call(
            PlatformPlanOut, "POST", "/platform-plans", json=_body(PlatformCreate, **fields)
        )
        return out

    def get(self, ref: str) -> PlatformOut:
        """One platform."""
        out: PlatformOut = self._c._call(PlatformOut, "GET", f"/platforms/{_q(ref)}")
        return out

    def patch(self, ref: str, parameters: dict[str, Any]) -> PlatformOut:
        """Change mutable parameters."""
        out: PlatformOut = self._c._call(
            PlatformOut,
            "PATCH",
            f"/platforms/{_q(ref)}",
            json=_body(PlatformPatch, parameters=parameters),
        )
        return out

    def delete(self, ref: str) -> PlatformOut:
        """Delete a platform and everything it made."""
        out: PlatformOut = self._c._call(PlatformOut, "DELETE", f"/platforms/{_q(ref)}")
        return out

    def retry(self, ref: str) -> PlatformOut:
        """Resume a FAILED platform from its failed step."""
        out: PlatformOut = self._c._call(PlatformOut, "POST", f"/platforms/{_q(ref)}/retry")
        return out

    def set_access(self, ref: str, users: builtins.list[str]) -> PlatformOut:
        """Who may use the platform."""
        out: PlatformOut = self._c._call(
            PlatformOut,
            "PUT",
            f"/platforms/{_q(ref)}/access",
            json=_body(PlatformAccessSet, users=users),
        )
        return out

    def services(self, ref: str) -> builtins.list[PlatformServiceOut]:
        """The platform's services and their URLs."""
        out: builtins.list[PlatformServiceOut] = self._c._all(
            PlatformServiceOut, f"/platforms/{_q(ref)}/services"
        )
        return out

    def events(self, ref: str) -> builtins.list[EventOut]:
        """The platform's timeline, oldest first."""
        out: builtins.list[EventOut] = self._c._all(EventOut, f"/platforms/{_q(ref)}/events")
        return out

    def wait(
        self,
        ref: str,
        phases: Collection[Phase] = frozenset({"READY"}),
        timeout: float = 600,
        on_change: Callable[[PlatformOut], None] | None = None,
    ) -> PlatformOut:
        """Poll until the platform is in one of ``phases`` (``WaitError`` on FAILED)."""
        return _wait_phase("platform", lambda: self.get(ref), phases, timeout, on_change)

    def wait_deleted(self, ref: str, timeout: float = 300) -> None:
        """Poll until the platform is gone."""
        _wait_gone("platform", ref, lambda: self.get(ref), timeout, None)


class _Benchmarks(_Group):
    """Benchmark runs and sets of your tenancy."""

    def kinds(self) -> builtins.list[KindOut]:
        """The kinds of benchmark and their parameters."""
        out: builtins.list[KindOut] = self._c._all(KindOut, "/benchmark-kinds")
        return out

    def run(self, spec: dict[str, Any], name: str | None = None) -> BenchmarkOut:
        """Submit one benchmark (a spec as in a YAML file)."""
        body = {**spec, **({"name": name} if name else {})}
        out: BenchmarkOut = self._c._call(BenchmarkOut, "POST", "/benchmarks", json=body)
        return out

    def run_set(self, spec: dict[str, Any]) -> SetOut:
        """Submit a benchmark set (``name``, ``template``, ``permutations``, ``repetitions``)."""
        out: SetOut = self._c._call(SetOut, "POST", "/benchmark-sets", json=spec)
        return out

    def list(
        self, *, set: str | None = None, kind: str | None = None
    ) -> builtins.list[BenchmarkOut]:
        """Runs, newest first (a set's in run order)."""
        out: builtins.list[BenchmarkOut] = self._c._all(
            BenchmarkOut, "/benchmarks", params={"set": set, "kind": kind}
        )
        return out

    def sets(self) -> builtins.list[SetOut]:
        """Sets, newest first."""
        out: builtins.list[SetOut] = self._c._all(SetOut, "/benchmark-sets")
        return out

    def get(self, ref: str) -> BenchmarkOut:
        """One run."""
        out: BenchmarkOut = self._c._call(BenchmarkOut, "GET", f"/benchmarks/{_q(ref)}")
        return out

    def get_set(self, ref: str) -> SetOut:
        """One set."""
        out: SetOut = self._c._call(SetOut, "GET", f"/benchmark-sets/{_q(ref)}")
        return out

    def find(self, ref: str) -> SetOut | BenchmarkOut:
        """A set by that name, else a run."""
        try:
            return self.get_set(ref)
        except ApiError as e:
            if e.status != 404:
                raise
        return self.get(ref)

    def output(self, ref: str) -> str:
        """What the run's tool printed."""
        return self._c.request("GET", f"/benchmarks/{_q(ref)}/output").text

    def events(self, ref: str) -> builtins.list[EventOut]:
        """The run's timeline."""
        out: builtins.list[EventOut] = self._c._all(EventOut, f"/benchmarks/{_q(ref)}/events")
        return out

    def delete(self, ref: str) -> None:
        """Cancel a run, or remove a finished one."""
        self._c.request("DELETE", f"/benchmarks/{_q(ref)}")

    def delete_set(self, ref: str) -> None:
        """Cancel a set's remaining runs, or remove a finished set."""
        self._c.request("DELETE", f"/benchmark-sets/{_q(ref)}")

    def results(self, ref: str, *, is_set: bool, baseline: str | None = None) -> ResultsOut:
        """Figures per permutation, against the baseline."""
        path = f"/benchmark-sets/{_q(ref)}/results" if is_set else f"/benchmarks/{_q(ref)}/results"
        out: ResultsOut = self._c._call(
            ResultsOut, "GET", path, params={"baseline": baseline} if is_set else None
        )
        return out

    def compare(self, a: str, b: str) -> CompareOut:
        """b against a (runs or sets)."""
        out: CompareOut = self._c._call(
            CompareOut, "GET", "/benchmark-comparisons", params={"a": a, "b": b}
        )
        return out

    def plot(self, ref: str, name: str, fmt: str, *, is_set: bool) -> bytes:
        """A plot's file."""
        base = "benchmark-sets" if is_set else "benchmarks"
        return self._c.request("GET", f"/{base}/{_q(ref)}/plots/{_q(name)}.{fmt}").content
