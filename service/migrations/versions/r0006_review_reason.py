"""Why an event was dismissed: ``reason = 'false_detection'`` when the reviewer says the detector was wrong (the
box is not what its label says: a buoy called a vessel), as opposed to a real but harmless incident. Training
labels from the review desk (``seawatch reviews export``) teach only those as background.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("review_actions", sa.Column("reason", sa.String(32), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("review_actions") as batch:
        batch.drop_column("reason")
