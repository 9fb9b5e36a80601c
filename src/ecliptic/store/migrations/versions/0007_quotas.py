"""reservation-only flavors and on-demand quotas

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 02:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flavor", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("reservation_only", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # GPU and bare-metal flavors are for reserved capacity (as the seeded ones now are).
    op.execute("UPDATE flavor SET reservation_only = TRUE WHERE gpus > 0 OR kind = 'baremetal'")
    with op.batch_alter_table("flavor", schema=None) as batch_op:
        batch_op.alter_column("reservation_only", server_default=None)
    op.create_table(
        "tenancy_quota",
        sa.Column("tenancy_id", sa.String(length=32), nullable=False),
        sa.Column("servers", sa.Integer(), nullable=True),
        sa.Column("vcpus", sa.Integer(), nullable=True),
        sa.Column("memory_mb", sa.BigInteger(), nullable=True),
        sa.Column("gpus", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenancy_id"],
            ["tenancy.id"],
            name=op.f("fk_tenancy_quota_tenancy_id_tenancy"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenancy_id", name=op.f("pk_tenancy_quota")),
    )


def downgrade() -> None:
    op.drop_table("tenancy_quota")
    with op.batch_alter_table("flavor", schema=None) as batch_op:
        batch_op.drop_column("reservation_only")
