"""Job stores: the ``Store`` protocol and its backends (SQLite embedded; Redis distributed)."""

from genaccel.store.base import JobPage, Store, worker_identity
from genaccel.store.sqlite import SQLiteStore

__all__ = ["JobPage", "SQLiteStore", "Store", "worker_identity"]
