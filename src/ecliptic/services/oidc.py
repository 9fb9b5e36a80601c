"""Signing in with the operator's OpenID Connect provider.

The authorization code flow with PKCE (S256), ``state`` and ``nonce``: ``OidcClient.begin``
makes the provider's sign-in URL and a ``Flow`` the browser keeps, sealed, in a cookie;
``OidcClient.finish`` redeems the code the provider sent back and checks the ID token
(signature against the provider's published keys, issuer, audience, expiry, nonce);
``sign_in`` finds or makes the user it names and brings their memberships in line with
their groups.

Threat model: everything the browser brings back (the query of the callback, the flow
cookie) is untrusted: the state must match the sealed flow, which only this instance can
make, and the code is worth nothing without the PKCE verifier inside it. The provider's own
endpoints (discovery, token, keys, userinfo) are trusted as far as TLS takes it; the ID
token is still checked in full, so a token for another client, another sign-in or another
provider is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ecliptic.config import OidcSettings
from ecliptic.errors import Conflict, EclipticError, NotFound, Unauthenticated
from ecliptic.naming import ID_LIKE_RE
from ecliptic.secretbox import SecretBox, SecretBoxError
from ecliptic.services.auth import IssuedToken, issue_token
from ecliptic.services.identity import leave_tenancy
from ecliptic.store.db import Database
from ecliptic.store.models import Membership, OidcLink, Tenancy, User

log = logging.getLogger(__name__)

FLOW_TTL = timedelta(minutes=10)
"""How long a browser has between starting sign-in and coming back from the provider."""
HTTP_TIMEOUT_S = 5.0
"""Each request to the provider: a provider that does not answer is reported, not waited on."""
METADATA_TTL_S = 3600.0
"""How long the provider's metadata (and keys) are kept before they are fetched again."""
KEYS_REFRESH_S = 30.0
"""A token signed with a key we do not know makes us fetch the keys again, at most this often
(a provider rotating keys), so forged key ids cannot make us hammer the provider."""
LEEWAY_S = 60
"""Clock difference tolerated with the provider on ``exp`` and ``iat``."""
SIGNING_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""ID-token signatures accepted: public-key ones only (never ``none``, never HMAC)."""
TOKEN_NAME = "browser sign-in (OpenID Connect)"
_FLOW_BOX_NAME = "oidc sign-in flow"
_NAME_MAX = 59
"""Room for a ``-NN`` suffix in a 63-character user name."""


class OidcError(EclipticError):
    """Signing in with the provider failed; the message says what to do."""

    code = "oidc_error"
    status = 400
    title = "Sign-in failed"


class OidcNotConfigured(NotFound):
    """This instance has no OpenID Connect provider."""

    code = "oidc_not_configured"
    title = "Single sign-on is not configured"


class ProviderUnavailable(OidcError):
    """The provider did not answer, or answered nonsense."""

    code = "oidc_provider_unavailable"
    status = 503
    title = "Sign-in provider unavailable"


class SignInExpired(OidcError):
    """The browser came back without a flow this instance started, or too late."""

    code = "oidc_sign_in_expired"
    title = "Sign-in expired"


class StateMismatch(OidcError):
    """The ``state`` the browser came back with is not the one of its flow."""

    code = "oidc_state_mismatch"
    title = "Sign-in not valid"


class SignInCancelled(OidcError):
    """The user (or the provider's policy) declined at the provider: ``access_denied``."""

    code = "oidc_cancelled"
    status = 401
    title = "Sign-in cancelled"


class ProviderRefused(OidcError):
    """The provider refused the sign-in or the code (used already, expired)."""

    code = "oidc_refused"
    title = "Sign-in refused"


class InvalidIdToken(OidcError):
    """The ID token failed a check: signature, issuer, audience, expiry or nonce."""

    code = "oidc_invalid_token"
    status = 401
    title = "Sign-in not valid"


class UnknownSigningKey(InvalidIdToken):
    """The ID token names a key the provider does not (or no longer, or not yet) publish."""


class NoTenancyYet(EclipticError):
    """Signed in, but none of the user's groups gives a tenancy."""

    code = "no_tenancy"
    status = 403
    title = "No tenancy yet"


@dataclass(frozen=True)
class Flow:
    """One sign-in under way, kept by the browser (sealed) between start and callback."""

    state: str
    """Random; the provider sends it back, and it must match."""
    nonce: str
    """Random; the ID token must carry it (binds the token to this sign-in)."""
    verifier: str
    """The PKCE code verifier: the code is worth nothing without it."""
    next: str
    """Where to go after sign-in (already made safe: a path on this host)."""
    started: float
    """When sign-in started (seconds since the epoch)."""


def seal_flow(box: SecretBox, flow: Flow) -> str:
    """The flow, sealed for a cookie: only this instance can read or make one."""
    data = {"s": flow.state, "n": flow.nonce, "v": flow.verifier, "x": flow.next}
    data["t"] = flow.started  # type: ignore[assignment]
    sealed = box.seal(_FLOW_BOX_NAME, json.dumps(data, separators=(",", ":")))
    # base64url: a cookie value browsers and frameworks keep as it is, without quotes.
    return base64.urlsafe_b64encode(sealed.encode()).decode().rstrip("=")


def open_flow(box: SecretBox, sealed: str, state: str, *, now: float) -> Flow:
    """The flow of a cookie, checked against the ``state`` the provider sent back."""
    again = "start signing in again from the sign-in page"
    if not sealed:
        raise SignInExpired(
            "this sign-in was not started in this browser, or its cookie is gone "
            f"(cookies must be allowed for this site): {again}"
        )
    try:
        raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4)).decode()
        data = json.loads(box.open(_FLOW_BOX_NAME, raw))
        flow = Flow(str(data["s"]), str(data["n"]), str(data["v"]), str(data["x"]), data["t"])
        started = float(flow.started)
    except (SecretBoxError, ValueError, KeyError, TypeError):
        raise SignInExpired(f"this sign-in is not one this site started: {again}") from None
    if now - started > FLOW_TTL.total_seconds() or now < started - LEEWAY_S:
        minutes = int(FLOW_TTL.total_seconds() // 60)
        raise SignInExpired(f"this sign-in took longer than {minutes} minutes: {again}")
    if not hmac.compare_digest(flow.state.encode(), state.encode()):
        raise StateMismatch(
            f"the answer from the sign-in provider does not belong to this sign-in: {again}"
        )
    return flow


@dataclass(frozen=True)
class ProviderMetadata:
    """What the provider's discovery document says, as far as we use it."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    token_auth_methods: tuple[str, ...]
    signing_algorithms: tuple[str, ...]
    scopes: tuple[str, ...] | None
    """Scopes the provider lists (None: it lists none)."""


def _pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def check_id_token(
    token: str,
    keys: Iterable[Mapping[str, Any]],
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    algorithms: Iterable[str],
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of an ID token whose signature (by one of the JWKs ``keys``), issuer,
    audience, expiry and nonce are right; else ``InvalidIdToken`` saying which check failed."""
    allowed = sorted(set(algorithms) & SIGNING_ALGORITHMS)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidIdToken(_bad_token("it is not a signed token")) from None
    alg = header.get("alg")
    if alg not in allowed:
        raise InvalidIdToken(_bad_token(f"it is signed with {alg!r}, not one of {allowed}"))
    key = _pick_key(list(keys), header.get("kid"), alg)
    if key is None:
        raise UnknownSigningKey(_bad_token("it is signed with a key the provider does not publish"))
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            audience=client_id,
            issuer=issuer,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidIdToken(
            _bad_token("it has expired (is this machine's clock right?)")
        ) from None
    except jwt.InvalidAudienceError:
        raise InvalidIdToken(_bad_token("it was issued to another application")) from None
    except jwt.InvalidIssuerError:
        raise InvalidIdToken(_bad_token("it was issued by another provider")) from None
    except jwt.InvalidSignatureError:
        raise InvalidIdToken(_bad_token("its signature is wrong")) from None
    except jwt.PyJWTError as exc:
        raise InvalidIdToken(_bad_token(str(exc))) from None
    if now is not None and claims["exp"] + LEEWAY_S < now:
        raise InvalidIdToken(_bad_token("it has expired (is this machine's clock right?)"))
    aud = claims["aud"]
    if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != client_id:
        raise InvalidIdToken(_bad_token("it was issued to another application"))
    if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
        raise InvalidIdToken(_bad_token("it belongs to another sign-in (nonce)"))
    if not isinstance(claims["sub"], str) or not 0 < len(claims["sub"]) <= 255:
        raise InvalidIdToken(_bad_token("its subject is not a string of 1-255 characters"))
    return claims


def _bad_token(why: str) -> str:
    return f"the sign-in provider's answer was refused: {why}. Start signing in again"


_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def _pick_key(keys: list[Mapping[str, Any]], kid: object, alg: str) -> jwt.PyJWK | None:
    """The published key for a token signed with ``alg`` (by key id, or the only one of its
    kind), usable with ``alg`` only."""
    fitting = [
        k
        for k in keys
        if k.get("kty") == _KEY_TYPES[alg[:2]]
        and k.get("alg") in (None, alg)
        and k.get("use", "sig") == "sig"
        and (kid is None or k.get("kid") == kid)
    ]
    if len(fitting) != 1:
        return None
    try:
        return jwt.PyJWK.from_dict(dict(fitting[0]), algorithm=alg)
    except jwt.PyJWTError:
        return None


class OidcClient:
    """Ecliptic as a client of one provider: discovery, the authorize URL, the code
    exchange and the ID token's checks. Thread-safe; metadata and keys are cached."""

    def __init__(
        self,
        settings: OidcSettings,
        redirect_uri: str,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.redirect_uri = redirect_uri
        self.clock = clock
        self._http = httpx.Client(
            timeout=HTTP_TIMEOUT_S,
            transport=transport,
            follow_redirects=False,
            headers={"Accept": "application/json"},
        )
        self._lock = threading.Lock()
        self._metadata: tuple[float, ProviderMetadata] | None = None
        self._keys: tuple[float, list[dict[str, Any]]] | None = None

    def close(self) -> None:
        """Close the connections to the provider."""
        self._http.close()

    # -- the provider's documents --------------------------------------------------------

    def _get_json(self, url: str, what: str, **kw: Any) -> Any:
        try:
            r = self._http.get(url, **kw)
        except httpx.HTTPError as exc:
            raise _unavailable(what, type(exc).__name__) from None
        if r.status_code != 200:
            raise _unavailable(what, f"HTTP {r.status_code}")
        try:
            return r.json()
        except ValueError:
            raise _unavailable(what, "not JSON") from None

    def metadata(self) -> ProviderMetadata:
        """The provider's discovery document (fetched at most once an hour)."""
        now = time.monotonic()
        with self._lock:
            cached = self._metadata
        if cached is not None and now - cached[0] < METADATA_TTL_S:
            return cached[1]
        url = f"{self.settings.issuer}/.well-known/openid-configuration"
        try:
            meta = self._parse_metadata(self._get_json(url, "its discovery document"))
        except ProviderUnavailable:
            if cached is None:
                raise
            log.warning("OIDC discovery failed; using the copy from before", exc_info=True)
            return cached[1]
        with self._lock:
            self._metadata = (now, meta)
        return meta

    def _parse_metadata(self, doc: Any) -> ProviderMetadata:
        if not isinstance(doc, dict):
            raise _unavailable("its discovery document", "not a JSON object")
        issuer = doc.get("issuer")
        if not isinstance(issuer, str) or issuer.rstrip("/") != self.settings.issuer:
            raise _unavailable(
                "its discovery document",
                f"it names the issuer {issuer!r}, not {self.settings.issuer!r} "
                "(check ECLIPTIC_OIDC_ISSUER)",
            )
        needed = ("authorization_endpoint", "token_endpoint", "jwks_uri")
        missing = [k for k in needed if not isinstance(doc.get(k), str)]
        if missing:
            raise _unavailable("its discovery document", f"{', '.join(missing)} missing")

        def strings(key: str) -> tuple[str, ...] | None:
            value = doc.get(key)
            if not isinstance(value, list):
                return None
            return tuple(v for v in value if isinstance(v, str))

        userinfo = doc.get("userinfo_endpoint")
        return ProviderMetadata(
            issuer=issuer,
            authorization_endpoint=doc["authorization_endpoint"],
            token_endpoint=doc["token_endpoint"],
            jwks_uri=doc["jwks_uri"],
            userinfo_endpoint=userinfo if isinstance(userinfo, str) else None,
            # The defaults when the provider does not say (OpenID Connect Discovery 1.0).
            token_auth_methods=strings("token_endpoint_auth_methods_supported")
            or ("client_secret_basic",),
            signing_algorithms=strings("id_token_signing_alg_values_supported") or ("RS256",),
            scopes=strings("scopes_supported"),
        )

    def _signing_keys(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            cached = self._keys
        if cached is not None:
            age = now - cached[0]
            if age < METADATA_TTL_S and not (refresh and age >= KEYS_REFRESH_S):
                return cached[1]
        doc = self._get_json(self.metadata().jwks_uri, "its signing keys")
        raw = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(raw, list):
            raise _unavailable("its signing keys", "no 'keys' list")
        # Public signing keys only: a symmetric ('oct') key has no place in a JWKS.
        keys = [k for k in raw if isinstance(k, dict) and k.get("kty") in _KEY_TYPES.values()]
        with self._lock:
            self._keys = (now, keys)
        return keys

    # -- the flow ------------------------------------------------------------------------

    def begin(self, next_uri: str) -> tuple[Flow, str]:
        """A new flow, and the provider's URL to send the browser to."""
        meta = self.metadata()
        flow = Flow(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            verifier=secrets.token_urlsafe(48),
            next=next_uri,
            started=self.clock(),
        )
        # The groups claim's scope (Dex: 'groups') is asked for only where it is offered: some
        # providers refuse a sign-in asking for a scope they do not know.
        offered = set(meta.scopes) if meta.scopes is not None else {"profile", "email"}
        wanted = ("profile", "email", self.settings.groups_claim.split(".")[0])
        scopes = ["openid", *(s for s in wanted if s in offered)]
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(dict.fromkeys(scopes)),
            "state": flow.state,
            "nonce": flow.nonce,
            "code_challenge": _pkce_challenge(flow.verifier),
            "code_challenge_method": "S256",
        }
        sep = "&" if "?" in meta.authorization_endpoint else "?"
        return flow, f"{meta.authorization_endpoint}{sep}{urlencode(query)}"

    def finish(
        self, flow: Flow, *, code: str, error: str = "", error_description: str = "", iss: str = ""
    ) -> dict[str, Any]:
        """The checked claims of the user the provider signed in (the ID token's, with the
        userinfo endpoint's when the ID token lacks the groups or the user name)."""
        if error == "access_denied":
            raise SignInCancelled(
                "sign-in was cancelled at the sign-in provider: nothing changed. Start again "
                "to sign in, or sign in with an Ecliptic user name and password"
            )
        if error:
            detail = f" ({error_description[:200]})" if error_description else ""
            raise ProviderRefused(
                f"the sign-in provider refused the sign-in: {error[:60]}{detail}. Start again; "
                "if it keeps happening, tell your administrator"
            )
        meta = self.metadata()
        # RFC 9207: an answer carrying another issuer's name is a mix-up; refuse it.
        if iss and iss != meta.issuer:
            raise StateMismatch(
                "the answer came from another sign-in provider: start signing in again"
            )
        if not code:
            raise ProviderRefused("the sign-in provider sent no code back: start signing in again")
        tokens = self._exchange(meta, code, flow.verifier)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise ProviderUnavailable(
                "the sign-in provider sent no ID token: check that the client is an OpenID "
                "Connect client with the 'openid' scope (tell your administrator)"
            )
        claims = self.validate(id_token, flow.nonce)
        access = tokens.get("access_token")
        needs = (self.settings.groups_claim.split(".")[0], "preferred_username")
        if (
            meta.userinfo_endpoint
            and isinstance(access, str)
            and any(c not in claims for c in needs)
        ):
            claims = {**self._userinfo(meta.userinfo_endpoint, access, claims["sub"]), **claims}
        return claims

    def validate(self, id_token: str, nonce: str) -> dict[str, Any]:
        """``check_id_token`` against the provider's current keys (fetched again once when
        the token names a key we do not have: the provider may have rotated its keys)."""
        meta = self.metadata()

        def check(keys: list[dict[str, Any]]) -> dict[str, Any]:
            return check_id_token(
                id_token,
                keys,
                issuer=meta.issuer,
                client_id=self.settings.client_id,
                nonce=nonce,
                algorithms=meta.signing_algorithms,
                now=self.clock(),
            )

        try:
            return check(self._signing_keys())
        except UnknownSigningKey:
            return check(self._signing_keys(refresh=True))

    def _exchange(self, meta: ProviderMetadata, code: str, verifier: str) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
        }
        auth: httpx.Auth | None = None
        cid, secret = self.settings.client_id, self.settings.client_secret
        if not secret:
            form["client_id"] = cid
        elif "client_secret_basic" in meta.token_auth_methods:
            # RFC 6749 2.3.1: both parts form-encoded before they are joined.
            auth = httpx.BasicAuth(_form_encode(cid), _form_encode(secret))
        elif "client_secret_post" in meta.token_auth_methods:
            form.update(client_id=cid, client_secret=secret)
        else:
            raise ProviderUnavailable(
                "the sign-in provider takes neither client_secret_basic nor client_secret_post "
                f"(it offers {', '.join(meta.token_auth_methods)}): tell your administrator"
            )
        try:
            r = self._http.post(
                meta.token_endpoint,
                data=form,
                auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise _unavailable("its token endpoint", type(exc).__name__) from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _unavailable("its token endpoint", f"HTTP {r.status_code}, not JSON")
        if r.status_code == 400 and body.get("error") == "invalid_grant":
            raise ProviderRefused(
                "this sign-in's code was used already or has expired (a reload, or the back "
                "button?): start signing in again"
            )
        if r.status_code != 200:
            log.warning("OIDC token endpoint refused the code: %s %s", r.status_code, body)
            raise ProviderRefused(
                f"the sign-in provider refused this sign-in ({str(body.get('error'))[:60]}): "
                "start again; if it keeps happening, tell your administrator (the client id "
                "or secret may be wrong)"
            )
        return body

    def _userinfo(self, url: str, access_token: str, sub: str) -> dict[str, Any]:
        info = self._get_json(
            url, "its userinfo endpoint", headers={"Authorization": f"Bearer {access_token}"}
        )
        if not isinstance(info, dict) or info.get("sub") != sub:
            raise InvalidIdToken(_bad_token("its userinfo answer is about another user"))
        return info


def _form_encode(value: str) -> str:
    return urlencode({"": value})[1:]


def _unavailable(what: str, why: str) -> ProviderUnavailable:
    log.warning("OIDC provider: %s failed: %s", what, why)
    return ProviderUnavailable(
        f"the sign-in provider could not be reached or answered wrongly ({what}: {why}). Try "
        "again in a few minutes, or sign in with an Ecliptic user name and password; tell "
        "your administrator if it lasts"
    )


# -- the user --------------------------------------------------------------------------


def groups_of(claims: Mapping[str, Any], claim: str) -> frozenset[str]:
    """The groups in ``claim`` (a dotted path reaches nested claims, e.g. Keycloak's
    ``realm_access.roles``); a single string counts as one group."""
    value: Any = claims
    if claim in claims:
        value = claims[claim]
    else:
        for part in claim.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def user_name_from(claims: Mapping[str, Any]) -> str:
    """An Ecliptic user name (lowercase letters, digits, '-') from ``preferred_username``
    (or the email's local part), before any suffix against a clash."""
    raw = claims.get("preferred_username") or claims.get("email") or ""
    raw = str(raw).split("@", 1)[0]
    ascii_ = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode().lower()
    name = re.sub(r"[^a-z0-9]+", "-", ascii_).strip("-")[:_NAME_MAX].strip("-") or "user"
    if ID_LIKE_RE.match(name):
        name = "u-" + name[: _NAME_MAX - 2]
    return name


def _free_name(session: Session, base: str) -> str:
    candidates = [base, *(f"{base}-{n}" for n in range(2, 100))]
    taken = set(session.scalars(select(User.name).where(User.name.in_(candidates))))
    for name in candidates:
        if name not in taken:
            return name
    raise Conflict(
        f"every user name from '{base}' to '{base}-99' is taken: ask your administrator to "
        "create your account by hand"
    )


@dataclass(frozen=True)
class SignedIn:
    """A user just signed in with the provider."""

    user_name: str
    """Their Ecliptic user name."""
    created: bool
    """Whether this sign-in made the account."""
    is_admin: bool
    """Whether they are an Ecliptic administrator."""
    tenancies: tuple[tuple[str, str], ...]
    """``(tenancy, role)`` of every membership they have now, by name."""
    token: IssuedToken
    """The browser token for the portal cookie."""


def sign_in(
    db: Database, settings: OidcSettings, claims: Mapping[str, Any], ttl: timedelta
) -> SignedIn:
    """Find or make the user of checked ``claims``, bring their OpenID Connect memberships
    and administrator flag in line with their groups, and issue a browser token."""
    for attempt in (1, 2):
        try:
            with db.write() as session:
                return _sign_in(session, settings, claims, ttl)
        except IntegrityError:
            # Two first sign-ins of one account at once: the other one made it; use it.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _sign_in(
    session: Session, settings: OidcSettings, claims: Mapping[str, Any], ttl: timedelta
) -> SignedIn:
    sub = str(claims["sub"])
    link = session.scalar(
        select(OidcLink).where(OidcLink.issuer == settings.issuer, OidcLink.subject == sub)
    )
    email = claims.get("email")
    email = email[:254] if isinstance(email, str) else ""
    created = link is None
    if link is None:
        base = user_name_from(claims)
        user = User(name=_free_name(session, base), email=email, password_hash=None)
        session.add(user)
        session.flush()
        if user.name != base:
            log.info(
                "OIDC user %s of %s is '%s': '%s' is taken", sub, settings.issuer, user.name, base
            )
        link = OidcLink(user_id=user.id, issuer=settings.issuer, subject=sub)
        session.add(link)
        session.flush()
    else:
        user = session.get_one(User, link.user_id)
        if user.disabled:
            raise Unauthenticated(
                f"the Ecliptic user '{user.name}' is disabled: ask your administrator"
            )
        if email and user.email != email:
            user.email = email
    groups = groups_of(claims, settings.groups_claim)
    grants = [g for g in settings.grants if g.group in groups]
    _sync_admin(session, user, link, any(g.tenancy == "*" for g in grants))
    _sync_memberships(session, user, grants)
    session.flush()
    rows = session.execute(
        select(Tenancy.name, Membership.role)
        .join(Membership, Membership.tenancy_id == Tenancy.id)
        .where(Membership.user_id == user.id)
        .order_by(Tenancy.name)
    ).all()
    token = issue_token(session, user, TOKEN_NAME, ttl=ttl)
    return SignedIn(user.name, created, user.is_admin, tuple((t, r) for t, r in rows), token)


def _sync_admin(session: Session, user: User, link: OidcLink, wanted: bool) -> None:
    if wanted and not user.is_admin:
        user.is_admin = True
        link.granted_admin = True
    elif not wanted and link.granted_admin:
        others = session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.is_admin.is_(True), User.disabled.is_(False), User.id != user.id)
        )
        if not others:
            log.warning("OIDC: '%s' left the admin group but is the last administrator", user.name)
            return
        user.is_admin = False
        link.granted_admin = False


_ROLE_RANK = {"member": 0, "admin": 1}


def _sync_memberships(session: Session, user: User, grants: list[Any]) -> None:
    """Add the memberships the groups give, change or remove the ones they gave before;
    memberships made by hand stay as they are."""
    wanted: dict[str, str] = {}
    for g in grants:
        if g.tenancy != "*" and _ROLE_RANK[g.role] >= _ROLE_RANK[wanted.get(g.tenancy, "member")]:
            wanted[g.tenancy] = g.role
    tenancies = {
        t.name: t for t in session.scalars(select(Tenancy).where(Tenancy.name.in_(wanted)))
    }
    for name in sorted(set(wanted) - set(tenancies)):
        log.warning("OIDC: ECLIPTIC_OIDC_GROUPS names tenancy '%s', which does not exist", name)
    by_tenancy = {t.id: wanted[name] for name, t in tenancies.items()}
    existing = list(session.scalars(select(Membership).where(Membership.user_id == user.id)))
    for m in existing:
        if m.origin != "oidc":
            continue
        role = by_tenancy.get(m.tenancy_id)
        if role is None:
            leave_tenancy(session, m.tenancy_id, user.id)
        elif m.role != role:
            m.role = role
    have = {m.tenancy_id for m in existing}
    for tenancy_id, role in by_tenancy.items():
        if tenancy_id not in have:
            session.add(
                Membership(tenancy_id=tenancy_id, user_id=user.id, role=role, origin="oidc")
            )
