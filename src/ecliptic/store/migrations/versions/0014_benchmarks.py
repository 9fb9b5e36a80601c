"""benchmarks: benchmark runs (spec, servers, environment, raw output, figures) and sets

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 02:00:18.211455
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import ecliptic.store.types

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "benchmark_set",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenancy_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column(
            "spec",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("phase_reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.Column("finished_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenancy_id"],
            ["tenancy.id"],
            name=op.f("fk_benchmark_set_tenancy_id_tenancy"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_benchmark_set")),
        sa.UniqueConstraint("tenancy_id", "name", name=op.f("uq_benchmark_set_tenancy_id")),
    )
    with op.batch_alter_table("benchmark_set", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_benchmark_set_phase"), ["phase"], unique=False)

    op.create_table(
        "benchmark",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenancy_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("set_id", sa.String(length=32), nullable=True),
        sa.Column("permutation_index", sa.Integer(), nullable=False),
        sa.Column("repetition", sa.Integer(), nullable=False),
        sa.Column(
            "permutation",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("raw_output", sa.Text(), nullable=False),
        sa.Column(
            "environment",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("started_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=True),
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
            ["set_id"],
            ["benchmark_set.id"],
            name=op.f("fk_benchmark_set_id_benchmark_set"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenancy_id"],
            ["tenancy.id"],
            name=op.f("fk_benchmark_tenancy_id_tenancy"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_benchmark")),
        sa.UniqueConstraint("tenancy_id", "name", name=op.f("uq_benchmark_tenancy_id")),
    )
    with op.batch_alter_table("benchmark", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_benchmark_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_benchmark_phase"), ["phase"], unique=False)
        batch_op.create_index(batch_op.f("ix_benchmark_set_id"), ["set_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("benchmark", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_benchmark_set_id"))
        batch_op.drop_index(batch_op.f("ix_benchmark_phase"))
        batch_op.drop_index(batch_op.f("ix_benchmark_kind"))

    op.drop_table("benchmark")
    with op.batch_alter_table("benchmark_set", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_benchmark_set_phase"))

    op.drop_table("benchmark_set")
