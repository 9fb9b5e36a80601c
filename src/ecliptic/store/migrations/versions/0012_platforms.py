"""platforms: instances of platform types, their access lists, and what they own

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 19:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import ecliptic.store.types

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "platform",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenancy_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("type_name", sa.String(length=63), nullable=False),
        sa.Column("type_version", sa.String(length=32), nullable=False),
        sa.Column("lease_id", sa.String(length=32), nullable=True),
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.Column("secrets", sa.Text(), nullable=False),
        sa.Column(
            "spec",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("phase_reason", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("observed_generation", sa.Integer(), nullable=False),
        sa.Column("created_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenancy_id"],
            ["tenancy.id"],
            name=op.f("fk_platform_tenancy_id_tenancy"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform")),
        sa.UniqueConstraint("tenancy_id", "name", name=op.f("uq_platform_tenancy_id")),
    )
    op.create_index(op.f("ix_platform_type_name"), "platform", ["type_name"], unique=False)
    op.create_index(op.f("ix_platform_lease_id"), "platform", ["lease_id"], unique=False)
    op.create_index(op.f("ix_platform_phase"), "platform", ["phase"], unique=False)
    op.create_table(
        "platform_access",
        sa.Column("platform_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["platform_id"],
            ["platform.id"],
            name=op.f("fk_platform_access_platform_id_platform"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_platform_access_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("platform_id", "user_id", name=op.f("pk_platform_access")),
    )
    op.create_index(
        op.f("ix_platform_access_user_id"), "platform_access", ["user_id"], unique=False
    )
    for table in ("server", "network", "tunnel_service"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("platform_id", sa.String(length=32), nullable=True))
            batch.create_index(f"ix_{table}_platform_id", ["platform_id"])


def downgrade() -> None:
    for table in ("server", "network", "tunnel_service"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_platform_id")
            batch.drop_column("platform_id")
    op.drop_index(op.f("ix_platform_access_user_id"), table_name="platform_access")
    op.drop_table("platform_access")
    op.drop_index(op.f("ix_platform_phase"), table_name="platform")
    op.drop_index(op.f("ix_platform_lease_id"), table_name="platform")
    op.drop_index(op.f("ix_platform_type_name"), table_name="platform")
    op.drop_table("platform")
