"""Holds on events: an event with a hold is never deleted by retention (``service/retention.py``), nor its
snapshot, clip and telemetry. A hold is added when an evidence package of the event is exported (``reason =
'evidence_export'``, one row per export: who exported when) or by a reviewer (``'manual'``). Confirmed events are
held by their review status, with no row here.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_holds",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), sa.ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("by", sa.String(128), nullable=False),
        sa.Column("at_ns", sa.BigInteger, nullable=False),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_event_holds_event", "event_holds", ["event_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_event_holds_event", "event_holds")
    op.drop_table("event_holds")
