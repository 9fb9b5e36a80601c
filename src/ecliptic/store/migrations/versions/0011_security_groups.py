"""security groups: named sets of firewall rules for a tenancy's ports

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 16:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ecliptic.store.types

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "security_group",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenancy_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenancy_id"],
            ["tenancy.id"],
            name=op.f("fk_security_group_tenancy_id_tenancy"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_group")),
        sa.UniqueConstraint("tenancy_id", "name", name=op.f("uq_security_group_tenancy_id")),
    )
    op.create_index(
        op.f("ix_security_group_tenancy_id"), "security_group", ["tenancy_id"], unique=False
    )
    op.create_table(
        "security_group_rule",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("group_id", sa.String(length=32), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("protocol", sa.String(length=8), nullable=False),
        sa.Column("port_min", sa.Integer(), nullable=True),
        sa.Column("port_max", sa.Integer(), nullable=True),
        sa.Column("remote_cidr", sa.String(length=43), nullable=True),
        sa.Column("remote_group_id", sa.String(length=32), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["security_group.id"],
            name=op.f("fk_security_group_rule_group_id_security_group"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["remote_group_id"],
            ["security_group.id"],
            name=op.f("fk_security_group_rule_remote_group_id_security_group"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_group_rule")),
    )
    op.create_index(
        op.f("ix_security_group_rule_group_id"), "security_group_rule", ["group_id"], unique=False
    )
    op.create_index(
        op.f("ix_security_group_rule_remote_group_id"),
        "security_group_rule",
        ["remote_group_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("security_group_rule")
    op.drop_table("security_group")
