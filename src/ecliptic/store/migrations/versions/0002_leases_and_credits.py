"""leases and credits

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import ecliptic.store.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "credit_account",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenancy_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenancy_id"],
            ["tenancy.id"],
            name=op.f("fk_credit_account_tenancy_id_tenancy"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_account")),
        sa.UniqueConstraint("tenancy_id", name=op.f("uq_credit_account_tenancy_id")),
    )
    op.create_table(
        "lease",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenancy_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("start_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("end_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("before_end_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("grace_s", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("phase_reason", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
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
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.Column("created_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenancy_id"],
            ["tenancy.id"],
            name=op.f("fk_lease_tenancy_id_tenancy"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lease")),
        sa.UniqueConstraint("tenancy_id", "name", name=op.f("uq_lease_tenancy_id")),
    )
    with op.batch_alter_table("lease", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lease_end_at"), ["end_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_lease_phase"), ["phase"], unique=False)
        batch_op.create_index(batch_op.f("ix_lease_start_at"), ["start_at"], unique=False)

    op.create_table(
        "credit_allocation",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("resource_class", sa.String(length=127), nullable=False),
        sa.Column("hours", sa.Numeric(precision=16, scale=3), nullable=False),
        sa.Column("start_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("end_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["credit_account.id"],
            name=op.f("fk_credit_allocation_account_id_credit_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_allocation")),
        sa.UniqueConstraint(
            "account_id", "name", "resource_class", name=op.f("uq_credit_allocation_account_id")
        ),
    )
    with op.batch_alter_table("credit_allocation", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_credit_allocation_account_id"), ["account_id"], unique=False
        )

    op.create_table(
        "lease_allocation",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("lease_id", sa.String(length=32), nullable=False),
        sa.Column("reservation", sa.String(length=63), nullable=False),
        sa.Column("host", sa.String(length=63), nullable=False),
        sa.Column(
            "amount",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lease_id"],
            ["lease.id"],
            name=op.f("fk_lease_allocation_lease_id_lease"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lease_allocation")),
    )
    with op.batch_alter_table("lease_allocation", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lease_allocation_host"), ["host"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_lease_allocation_lease_id"), ["lease_id"], unique=False
        )

    op.create_table(
        "ledger_entry",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("allocation_id", sa.String(length=32), nullable=False),
        sa.Column("lease_id", sa.String(length=32), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("resource_class", sa.String(length=127), nullable=False),
        sa.Column("hours", sa.Numeric(precision=16, scale=3), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["credit_account.id"],
            name=op.f("fk_ledger_entry_account_id_credit_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["allocation_id"],
            ["credit_allocation.id"],
            name=op.f("fk_ledger_entry_allocation_id_credit_allocation"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entry")),
    )
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_allocation", ["allocation_id", "id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_ledger_entry_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_ledger_entry_lease_id"), ["lease_id"], unique=False)

    with op.batch_alter_table("server", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("reservation", sa.String(length=63), nullable=True))
        batch_op.add_column(
            sa.Column("preemptible", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index(batch_op.f("ix_server_lease_id"), ["lease_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("server", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_server_lease_id"))
        batch_op.drop_column("preemptible")
        batch_op.drop_column("reservation")
        batch_op.drop_column("lease_id")

    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entry_lease_id"))
        batch_op.drop_index(batch_op.f("ix_ledger_entry_account_id"))
        batch_op.drop_index("ix_ledger_allocation")

    op.drop_table("ledger_entry")
    with op.batch_alter_table("lease_allocation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lease_allocation_lease_id"))
        batch_op.drop_index(batch_op.f("ix_lease_allocation_host"))

    op.drop_table("lease_allocation")
    with op.batch_alter_table("credit_allocation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_allocation_account_id"))

    op.drop_table("credit_allocation")
    with op.batch_alter_table("lease", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lease_start_at"))
        batch_op.drop_index(batch_op.f("ix_lease_phase"))
        batch_op.drop_index(batch_op.f("ix_lease_end_at"))

    op.drop_table("lease")
    op.drop_table("credit_account")
