"""Operator calibrations: a fixed camera's calibration applied from the calibration page to the running service.

One row per apply (``PUT /api/sources/{id}/calibration``): the whole ``calibration`` section as JSON (intrinsics,
surveyed pose, surface height), who applied it, when, their note, the fit's summary numbers, and the SHA-256 of the
configured calibration section at that moment (to tell later whether the configuration file changed since). The
newest row of a source is in force unless it was reverted (``DELETE``): then the configured one is. Rows are never
deleted: the table is the audit trail of who changed where a camera's events are placed.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_calibrations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source_id", sa.String(128), nullable=False),
        sa.Column("calibration", sa.Text, nullable=False),
        sa.Column("fit", sa.Text, nullable=False, server_default="{}"),
        sa.Column("config_sha256", sa.String(64), nullable=False, server_default=""),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("reverted_ns", sa.BigInteger, nullable=True),
        sa.Column("reverted_by", sa.String(128), nullable=True),
    )
    op.create_index("ix_source_calibrations_source", "source_calibrations", ["source_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_source_calibrations_source", "source_calibrations")
    op.drop_table("source_calibrations")
