"""Time and type indexes that also carry lat/lon, so that a search walking them (newest first) tests a bbox,
polygon or radius on the index entry and reads the event row only for the entries inside.

A polygon or radius search over an area holding many events, with a type filter, walks ``type, start_ns``; before
this it read every event row of that type until 50 fell inside (measured 1 M events, SQLite: 374 ms p95 under
load), now only those inside (26 ms). ``ix_events_start`` / ``ix_events_type_start`` are replaced by
``ix_events_start_geo`` / ``ix_events_type_start_geo`` whose leading columns are the same.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _analyze(names: list[str]) -> None:
    """SQLite: planner statistics for new indexes, where the database has statistics at all."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and bind.execute(sa.text("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'")).first():
        for name in names:
            bind.execute(sa.text(f"ANALYZE {name}"))


def upgrade() -> None:
    op.create_index("ix_events_start_geo", "events", ["start_ns", "id", "lat_deg", "lon_deg"])
    op.drop_index("ix_events_start", "events")
    op.create_index("ix_events_type_start_geo", "events", ["type", "start_ns", "lat_deg", "lon_deg"])
    op.drop_index("ix_events_type_start", "events")
    _analyze(["ix_events_start_geo", "ix_events_type_start_geo"])


def downgrade() -> None:
    op.create_index("ix_events_start", "events", ["start_ns", "id"])
    op.drop_index("ix_events_start_geo", "events")
    op.create_index("ix_events_type_start", "events", ["type", "start_ns"])
    op.drop_index("ix_events_type_start_geo", "events")
    _analyze(["ix_events_start", "ix_events_type_start"])
