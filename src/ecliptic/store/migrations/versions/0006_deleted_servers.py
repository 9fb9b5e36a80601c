"""deleted servers (tombstones)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 01:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ecliptic.store.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deleted_server",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenancy_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("flavor", sa.String(length=63), nullable=False),
        sa.Column("host", sa.String(length=63), nullable=True),
        sa.Column("lease_id", sa.String(length=32), nullable=True),
        sa.Column("preemptible", sa.Boolean(), nullable=False),
        sa.Column("created_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenancy_id"],
            ["tenancy.id"],
            name=op.f("fk_deleted_server_tenancy_id_tenancy"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deleted_server")),
    )
    with op.batch_alter_table("deleted_server", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deleted_server_deleted_at"), ["deleted_at"], unique=False
        )
        batch_op.create_index(
            "ix_deleted_server_tenancy", ["tenancy_id", "deleted_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("deleted_server", schema=None) as batch_op:
        batch_op.drop_index("ix_deleted_server_tenancy")
        batch_op.drop_index(batch_op.f("ix_deleted_server_deleted_at"))
    op.drop_table("deleted_server")
