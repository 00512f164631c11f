"""The security audit log: who did what through the API, from where, and what came of it.

One row per recorded user action (``service/audit.py``): log-ins (failed ones too), log-outs, exports (evidence
packages, CSV / GeoJSON / KML, recording downloads), holds put on and lifted, ignore areas added and removed,
calibrations applied and reverted, view reference resets, drone commands, events reported from a recording,
reviews, reads of this log itself, and refusals for want of a role. ``time_ns`` (UTC), ``actor`` (a user or API
key name; empty for an unknown log-in name), ``actor_kind`` (``user`` / ``key`` / empty), ``role``, ``client``
(the client's address, through the trusted proxies), ``action`` (dotted: ``auth.login``, ``export.evidence``,
``drone.abort``), ``target`` (an event, source or drone id), ``outcome`` (``ok``, ``refused``, ``failed``) with the
HTTP ``status``, and ``details`` (JSON; never a password, token or key). Rows go only by retention
(``storage.retention.audit_days``). The ``(time_ns, id)`` index serves the newest-first pages and the retention
cut; ``actor`` and ``target`` have their own for the log's filters.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time_ns", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False, server_default=""),
        sa.Column("actor_kind", sa.String(8), nullable=False, server_default=""),
        sa.Column("role", sa.String(16), nullable=False, server_default=""),
        sa.Column("client", sa.String(64), nullable=False, server_default=""),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False, server_default=""),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("details", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_index("ix_audit_log_time", "audit_log", ["time_ns", "id"])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor", "time_ns"])
    op.create_index("ix_audit_log_target", "audit_log", ["target", "time_ns"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_target", "audit_log")
    op.drop_index("ix_audit_log_actor", "audit_log")
    op.drop_index("ix_audit_log_time", "audit_log")
    op.drop_table("audit_log")
