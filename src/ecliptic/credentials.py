"""The names of Ecliptic's own credentials, which must never reach a service behind the
gateway: the front and the auth app take them out of every forwarded request."""

from __future__ import annotations

API_TOKEN_PREFIX = "ecl_"
"""Every API bearer token starts with this."""
GATEWAY_COOKIE = "ecliptic_gw"
"""The gateway's session cookie (host-only, on each service's subdomain)."""
PORTAL_COOKIE = "ecliptic_session"
"""The portal's sign-in cookie."""
STATE_COOKIE = "ecliptic_gw_state"
"""Set on a service's host when a browser starts signing in there: only that browser can
redeem the sign-in code the portal hands back."""

HOST_PREFIX = "__Host-"
"""Over HTTPS, the gateway's cookies carry this prefix: browsers then accept them only with
Secure, Path=/ and no Domain, so no sibling subdomain can plant or widen them."""


def cookie_name(base: str, https: bool) -> str:
    """The name of cookie ``base`` on a connection that is (or is not) HTTPS."""
    return HOST_PREFIX + base if https else base
