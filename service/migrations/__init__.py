"""Alembic migrations of the event store (shipped in the wheel; run by ``EventStore.open``)."""

from __future__ import annotations

from pathlib import Path


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
