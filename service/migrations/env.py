"""Alembic environment: migrations run on the connection ``EventStore.migrate`` hands over (or a URL given with
``alembic -x url=...``)."""

from __future__ import annotations

from alembic import context
import sqlalchemy as sa

from seawatch.service.migrations import include_object
from seawatch.service.store import metadata

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, include_object=include_object,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
