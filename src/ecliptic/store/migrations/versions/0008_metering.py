"""on-demand use metered from credits: the server's paid-up time, ledger rows per server

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 06:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ecliptic.store.types import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("server", schema=None) as batch_op:
        batch_op.add_column(sa.Column("metered_until", UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_server_metered_until"), ["metered_until"], unique=False
        )
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.add_column(sa.Column("server_id", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_ledger_entry_server_id"), ["server_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entry_server_id"))
        batch_op.drop_column("server_id")
    with op.batch_alter_table("server", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_server_metered_until"))
        batch_op.drop_column("metered_until")
