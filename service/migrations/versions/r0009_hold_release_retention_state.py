"""Holds can be lifted, and a store remembers when retention first ran on it.

``event_holds`` gains ``released_ns`` / ``released_by`` / ``release_note``: a lifted hold is marked released (who,
when, why), never deleted, so the audit trail of an event keeps every hold it ever had; only holds with no
``released_ns`` keep an event from retention. Rows from before this revision are active holds (NULL).

``retention_state`` holds named times of the store (UTC ns): ``enabled_ns``, when retention first ran on it, and
``protect_before_ns``, events stored before which are kept for ``storage.retention.upgrade_grace_days`` after that
(0 when the store held nothing retention would have deleted then: a new store does not wait). The rows are written
by the service (``service/retention.py``), not here: the migration cannot know whether retention is enabled.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("event_holds", sa.Column("released_ns", sa.BigInteger, nullable=True))
    op.add_column("event_holds", sa.Column("released_by", sa.String(128), nullable=True))
    op.add_column("event_holds", sa.Column("release_note", sa.Text, nullable=False, server_default=""))
    op.create_table(
        "retention_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value_ns", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("retention_state")
    # the old schema cannot say a hold was lifted: its row would hold the event again, so it goes
    op.execute(sa.text("DELETE FROM event_holds WHERE released_ns IS NOT NULL"))
    with op.batch_alter_table("event_holds") as batch:
        batch.drop_column("release_note")
        batch.drop_column("released_by")
        batch.drop_column("released_ns")
