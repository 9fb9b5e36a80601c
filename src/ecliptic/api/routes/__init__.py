"""Routers of the REST API, one file per area."""
