"""Ignore areas added from the review desk: an operator marks a dismissed event's subject as a fixed false alarm
(a buoy, a pile) and detections of its label at that spot of that camera are dropped from then on; the rows
outlive restarts and are applied on top of the configured ``ignore`` areas.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ignore_areas",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source_id", sa.String(128), nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("polygon_px", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("event_id", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ignore_areas_source", "ignore_areas", ["source_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_ignore_areas_source", "ignore_areas")
    op.drop_table("ignore_areas")
