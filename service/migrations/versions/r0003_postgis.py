"""Spatial index for polygon / radius search: on PostgreSQL a PostGIS ``geom geometry(Point, 4326)`` column on
events, generated from ``lon_deg`` / ``lat_deg`` (so every insert and update fills it, bulk loads included), with a
GiST index on it (``ST_Covers`` with a polygon) and one on ``geom::geography`` (``ST_DWithin`` in metres on the
spheroid).

SQLite: nothing to do. Polygon and radius search there narrow the rows with the lat/lon index and finish with exact
SQL functions the store registers on each connection (``sw_in_polygon``, ``sw_geodesic_m``).

PostgreSQL without PostGIS (not installed, or the role may not create the extension): the migration logs a
warning and leaves the table as it is, like 0002 without pg_trgm. Everything but polygon / radius search works;
those answer a clear error naming the fix. ``EventStore.migrate`` calls :func:`ensure_postgis` again at every
start, so once a superuser has run ``CREATE EXTENSION postgis`` the next start adds the column and indexes.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
log = logging.getLogger(__name__)

POSTGIS_UP = [
    "ALTER TABLE events ADD COLUMN geom geometry(Point, 4326) "
    "GENERATED ALWAYS AS (ST_SetSRID(ST_MakePoint(lon_deg, lat_deg), 4326)) STORED",
    "CREATE INDEX ix_events_geom ON events USING gist (geom)",
    "CREATE INDEX ix_events_geog ON events USING gist ((geom::geography))",
]


def ensure_postgis(bind) -> bool:
    """Create the extension, column and indexes where missing (idempotent); False, with a warning, without PostGIS."""
    if bind.dialect.name != "postgresql":
        return False
    have = bind.execute(sa.text("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                                "AND table_name = 'events' AND column_name = 'geom'")).first()
    if have is not None:
        return True
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS postgis"))
    except sa.exc.DBAPIError as exc:
        log.warning("PostGIS is not available on this database (%s): polygon and radius search are disabled until "
                    "a superuser runs CREATE EXTENSION postgis in it (the next start then adds the spatial index)",
                    str(exc.orig).strip().splitlines()[0])
        return False
    for stmt in POSTGIS_UP:
        bind.execute(sa.text(stmt))
    return True


def upgrade() -> None:
    ensure_postgis(op.get_bind())


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_events_geog")
        op.execute("DROP INDEX IF EXISTS ix_events_geom")
        op.execute("ALTER TABLE events DROP COLUMN IF EXISTS geom")
