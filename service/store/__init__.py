"""The store: SQLAlchemy models, the engine and the Alembic migrations."""

from service.store.db import Store, open_store

__all__ = ["Store", "open_store"]
