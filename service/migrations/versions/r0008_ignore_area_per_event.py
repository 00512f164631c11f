"""One ignore area per dismissed event, enforced by the database: two service processes sharing one PostgreSQL
database (or two SQLite writers) could each check "no area from this event yet" and both insert. Areas made twice
before this revision keep their polygons and labels; only the later copies lose their link to the event (their
``event_id`` becomes NULL), so nothing an operator marked is lost.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text(
        "UPDATE ignore_areas SET event_id = NULL WHERE event_id IS NOT NULL AND id NOT IN "
        "(SELECT MIN(id) FROM ignore_areas WHERE event_id IS NOT NULL GROUP BY event_id)"))
    op.create_index("ux_ignore_areas_event", "ignore_areas", ["event_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_ignore_areas_event", "ignore_areas")
