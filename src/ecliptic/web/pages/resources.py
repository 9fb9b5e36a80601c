"""Portal pages: resources."""

from __future__ import annotations

from ecliptic.web.pages.common import page_router

router = page_router()
