"""servers boot from images: the image each server was created from

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 15:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("server") as batch:
        batch.add_column(
            sa.Column("image", sa.String(length=63), nullable=False, server_default="base")
        )
        batch.create_index("ix_server_image", ["image"])


def downgrade() -> None:
    with op.batch_alter_table("server") as batch:
        batch.drop_index("ix_server_image")
        batch.drop_column("image")
