"""Alembic environment: the URL or open connection comes from ``service.store.db``."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy import Connection, create_engine

from service.store.models import Base
from service.store.types import UTCTime

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    # Migrations must not import the package's types: UTCTime is a BIGINT on disk.
    if type_ == "type" and isinstance(obj, UTCTime):
        return "sa.BigInteger()"
    return False


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = create_engine(config.attributes["url"])
    with engine.begin() as opened:
        _migrate(opened)
    engine.dispose()


run()
