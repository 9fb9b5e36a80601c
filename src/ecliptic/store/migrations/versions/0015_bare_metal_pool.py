"""bare metal through Ironic: hosts from Ironic nodes, and the bare-metal-or-hypervisor pool

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 05:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import ecliptic.store.types

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_TIME = ecliptic.store.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("host") as batch:
        batch.add_column(sa.Column("state_reason", sa.Text(), server_default="", nullable=False))
        batch.add_column(
            sa.Column("source", sa.String(length=16), server_default="inventory", nullable=False)
        )
        batch.add_column(sa.Column("node_id", sa.String(length=64), nullable=True))
        batch.create_unique_constraint(batch.f("uq_host_node_id"), ["node_id"])
    op.create_table(
        "host_role",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("hold", sa.String(length=16), server_default="", nullable=False),
        sa.Column("idle_since", _TIME, nullable=True),
        sa.Column("spec", _JSON, nullable=False),
        sa.Column("status", _JSON, nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("phase_reason", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("observed_generation", sa.Integer(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["id"], ["host.id"], name=op.f("fk_host_role_id_host"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_host_role")),
    )
    op.create_index(op.f("ix_host_role_phase"), "host_role", ["phase"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_host_role_phase"), table_name="host_role")
    op.drop_table("host_role")
    with op.batch_alter_table("host") as batch:
        batch.drop_constraint(batch.f("uq_host_node_id"), type_="unique")
        batch.drop_column("node_id")
        batch.drop_column("source")
        batch.drop_column("state_reason")
