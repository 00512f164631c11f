"""Index for free-text search (substring semantics of ``q``): SQLite FTS5 with the trigram tokenizer kept in step
by triggers; PostgreSQL pg_trgm GIN index on ``search_text`` (skipped, with a warning, where the extension cannot
be created).

The SQLite index is external-content, keyed by the events table's rowid. ``VACUUM`` may renumber those rowids:
run ``INSERT INTO events_fts(events_fts) VALUES('rebuild')`` after one. Search also re-checks the text on the
event row itself, so a stale index can miss rows but never return wrong ones.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
log = logging.getLogger(__name__)

SQLITE_UP = [
    "CREATE VIRTUAL TABLE events_fts USING fts5(search_text, content='events', content_rowid='rowid', tokenize='trigram')",
    "CREATE TRIGGER events_fts_ai AFTER INSERT ON events BEGIN "
    "INSERT INTO events_fts(rowid, search_text) VALUES (new.rowid, new.search_text); END",
    "CREATE TRIGGER events_fts_ad AFTER DELETE ON events BEGIN "
    "INSERT INTO events_fts(events_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text); END",
    "CREATE TRIGGER events_fts_au AFTER UPDATE OF search_text ON events BEGIN "
    "INSERT INTO events_fts(events_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text); "
    "INSERT INTO events_fts(rowid, search_text) VALUES (new.rowid, new.search_text); END",
    "INSERT INTO events_fts(events_fts) VALUES ('rebuild')",
]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for stmt in SQLITE_UP:
            op.execute(stmt)
    elif bind.dialect.name == "postgresql":
        try:
            with bind.begin_nested():
                bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
                bind.execute(sa.text("CREATE INDEX ix_events_search_trgm ON events USING gin (search_text gin_trgm_ops)"))
        except sa.exc.DBAPIError as exc:
            log.warning("free-text index not created (pg_trgm unavailable: %s); text search will scan", exc.orig)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for name in ("events_fts_ai", "events_fts_ad", "events_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS events_fts")
    elif bind.dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_events_search_trgm")
