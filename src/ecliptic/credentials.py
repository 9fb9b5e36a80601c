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
