"""The PostgreSQL backend: `service.storage.open_storage` picks it for a `postgresql://` URL."""

from service.storage.postgres.backend import PostgresStorage

__all__ = ["PostgresStorage"]
