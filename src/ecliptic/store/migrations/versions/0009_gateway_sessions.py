"""server-side gateway sessions tied to the portal sign-in, and sign-in codes tied to the
browser that started them

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ecliptic.store.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_session",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("portal_token_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_gateway_session_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["portal_token_id"],
            ["api_token.id"],
            name=op.f("fk_gateway_session_portal_token_id_api_token"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_session")),
    )
    with op.batch_alter_table("gateway_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gateway_session_expires_at"), ["expires_at"])
        batch_op.create_index(batch_op.f("ix_gateway_session_portal_token_id"), ["portal_token_id"])
    with op.batch_alter_table("gateway_code", schema=None) as batch_op:
        batch_op.add_column(sa.Column("portal_token_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("state_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gateway_code", schema=None) as batch_op:
        batch_op.drop_column("state_hash")
        batch_op.drop_column("portal_token_id")
    op.drop_table("gateway_session")
