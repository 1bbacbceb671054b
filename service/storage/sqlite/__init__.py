"""The SQLite backend of the `Storage` contract: one file in WAL mode, group-committed writes.

Only `service.storage.open_storage` imports this package (lazily, for `sqlite:` URLs).
"""

from service.storage.sqlite.backend import SQLiteStorage

__all__ = ["SQLiteStorage"]
