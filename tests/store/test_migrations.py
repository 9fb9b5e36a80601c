"""Migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ecliptic.store.db import Database
from ecliptic.store.migrate import upgrade
from ecliptic.store.models import Base


def test_migrations_match_models(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    upgrade(db)
    upgrade(db)  # idempotent on every start
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    db.dispose()
