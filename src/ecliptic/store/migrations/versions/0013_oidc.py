"""oidc: users linked to an OpenID Connect provider's accounts; where a membership came from

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 22:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ecliptic.store.types

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oidc_link",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("issuer", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("granted_admin", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", ecliptic.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_oidc_link_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_link")),
        sa.UniqueConstraint("issuer", "subject", name=op.f("uq_oidc_link_issuer")),
    )
    op.create_index(op.f("ix_oidc_link_user_id"), "oidc_link", ["user_id"], unique=False)
    # Every membership so far was made by hand (or by the first start).
    op.add_column(
        "membership",
        sa.Column("origin", sa.String(length=16), server_default="manual", nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("membership", schema=None) as batch_op:
        batch_op.drop_column("origin")
    op.drop_index(op.f("ix_oidc_link_user_id"), table_name="oidc_link")
    op.drop_table("oidc_link")
