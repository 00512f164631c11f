"""Alembic migrations of the event store (shipped in the wheel; run by ``EventStore.open``)."""

from __future__ import annotations

from pathlib import Path


# made by migrations 0002 / 0003 or by extensions, outside store.metadata: autogenerate must leave them alone
_OUTSIDE_METADATA = ("events_fts", "ix_events_search_trgm", "ix_events_geom", "ix_events_geog", "spatial_ref_sys")


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic ``include_object`` hook: False for the free-text index, the PostGIS column, indexes and table."""
    if type_ == "column" and name == "geom" and getattr(getattr(obj, "table", None), "name", "") == "events":
        return False
    return not (name or "").startswith(_OUTSIDE_METADATA)


def alembic_config(connection=None):
    """An Alembic ``Config`` pointing at this folder; ``connection`` is handed to env.py."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(connection, revision: str = "head") -> None:
    """Upgrade the database behind ``connection`` (inside its transaction) to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(connection), revision)
