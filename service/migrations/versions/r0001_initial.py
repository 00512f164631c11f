"""Initial event store: events (one row per incident) and review_actions (the audit trail).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("severity_rank", sa.SmallInteger, nullable=False),
        sa.Column("phase", sa.String(8), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("source_id", sa.String(128), nullable=False),
        sa.Column("zone_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("end_ns", sa.BigInteger, nullable=True),
        sa.Column("at_ns", sa.BigInteger, nullable=False),
        sa.Column("lat_deg", sa.Float, nullable=True),
        sa.Column("lon_deg", sa.Float, nullable=True),
        sa.Column("mmsi", sa.String(16), nullable=True),
        sa.Column("vessel_name", sa.String(128), nullable=True),
        sa.Column("hull_text", sa.String(64), nullable=True),
        sa.Column("review_status", sa.String(16), nullable=False, server_default="new"),
        sa.Column("search_text", sa.Text, nullable=False, server_default=""),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("stored_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_events_start", "events", ["start_ns", "id"])
    op.create_index("ix_events_at", "events", ["at_ns", "id"])
    op.create_index("ix_events_type_start", "events", ["type", "start_ns"])
    op.create_index("ix_events_source_start", "events", ["source_id", "start_ns"])
    op.create_index("ix_events_status_start", "events", ["review_status", "start_ns"])
    op.create_index("ix_events_lat_lon", "events", ["lat_deg", "lon_deg"])
    op.create_index("ix_events_mmsi", "events", ["mmsi"])
    op.create_table(
        "review_actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), sa.ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("at_ns", sa.BigInteger, nullable=False),
        sa.Column("by", sa.String(128), nullable=False),
        sa.Column("by_kind", sa.String(8), nullable=False),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_review_event", "review_actions", ["event_id", "id"])


def downgrade() -> None:
    op.drop_table("review_actions")
    op.drop_table("events")
