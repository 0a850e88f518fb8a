"""What the state DB (``dwfhpc.statedb``) and the push journal (``dwfhpc.push.journal``) share.

:class:`Database` is one SQLite connection in WAL mode behind one ``RLock`` (thread-safe; other
processes read alongside), with:

* :meth:`Database.transaction` (``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error),
* :meth:`Database.rows` / :meth:`Database.execute`,
* :meth:`Database.update`, which only writes columns the table has (an unknown one raises),
* an ``events`` table (``t, level, <EVENT_KEY>, message``),
* migrations by ``PRAGMA user_version``: ``MIGRATIONS[i]`` takes a DB from version ``i`` to
  ``i + 1``. A new DB is created from ``SCHEMA`` (the latest layout) and stamped with the latest
  version; an existing one runs the steps it lacks, then ``SCHEMA`` adds any new table or index.
  Steps must tolerate a DB that already has their change: DBs written before versioning existed
  are at version 0 whatever their layout.

:class:`EventHandler` puts log records into the events table, so a message is logged once and
lands both in the log and in the DB: records at WARNING or above, and records logged with
``extra={"part": ...}`` (the key column's name; ``None`` is allowed) at any level.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

Migration = Callable[[sqlite3.Connection], None]


class Database:
    """Base of :class:`~dwfhpc.statedb.StateDB` and :class:`~dwfhpc.push.journal.Journal`."""

    SCHEMA: ClassVar[str] = ""
    MIGRATIONS: ClassVar[tuple[Migration, ...]] = ()
    EVENT_KEY: ClassVar[str] = "part"  # the events table's column naming what an event is about
    TIMEOUT: ClassVar[float] = 60.0

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                   timeout=self.TIMEOUT)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()
        self._columns = {table: frozenset(r[1] for r in self._db.execute(f"PRAGMA table_info({table})"))
                         for (table,) in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    # ---------------------------------------------------------------- connection
    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def execute(self, sql: str, args: Iterable = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, tuple(args))

    def rows(self, sql: str, args: Iterable = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    _exec = execute
    _rows = rows

    def transaction(self) -> _Transaction:
        """``with db.transaction():`` groups writes (BEGIN IMMEDIATE ... COMMIT, rolled back on error)."""
        return _Transaction(self)

    # ---------------------------------------------------------------- schema
    @property
    def schema_version(self) -> int:
        return int(self.rows("PRAGMA user_version")[0][0])

    def _migrate(self) -> None:
        latest = len(self.MIGRATIONS)
        statements = [s.strip() for s in self.SCHEMA.split(";") if s.strip()]
        with self.transaction():
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            fresh = not self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' LIMIT 1").fetchall()
            if version > latest:
                raise sqlite3.DatabaseError(f"{self.path}: schema version {version} is newer than this dwfhpc "
                                            f"knows ({latest}); upgrade dwfhpc")
            if not fresh:
                for step in self.MIGRATIONS[version:]:
                    step(self._db)
            for sql in statements:  # a fresh DB, or tables and indexes added since
                self._db.execute(sql)
            if version != latest:
                self._db.execute(f"PRAGMA user_version={latest:d}")

    def columns(self, table: str) -> frozenset[str]:
        try:
            return self._columns[table]
        except KeyError:
            raise ValueError(f"no table {table!r} in {self.path.name}") from None

    def update(self, table: str, where: Mapping[str, Any], fields: Mapping[str, Any]) -> int:
        """``UPDATE table SET fields WHERE where`` (equalities); only the table's own columns. Returns rows changed."""
        known = self.columns(table)
        unknown = sorted(set(fields) - known) + sorted(set(where) - known)
        if unknown:
            raise ValueError(f"{table} has no column(s) {', '.join(unknown)}")
        if not fields:
            return 0
        keys = ", ".join(f"{k}=?" for k in fields)
        cond = " AND ".join(f"{k}=?" for k in where) or "1=1"
        return self.execute(f"UPDATE {table} SET {keys} WHERE {cond}", (*fields.values(), *where.values())).rowcount

    # ---------------------------------------------------------------- events
    def add_event(self, level: str, message: str, key: str | None = None, now: float | None = None) -> None:
        self.execute(f"INSERT INTO events(t, level, {self.EVENT_KEY}, message) VALUES (?,?,?,?)",
                     (now or time.time(), level, key, message))

    def events(self, limit: int = 50, level: str | None = None) -> list[sqlite3.Row]:
        if level:
            return self.rows("SELECT * FROM events WHERE level=? ORDER BY t DESC LIMIT ?", (level, limit))
        return self.rows("SELECT * FROM events ORDER BY t DESC LIMIT ?", (limit,))

    def state_counts(self, table: str) -> dict[str, int]:
        """Rows of ``table`` by their ``state``."""
        if "state" not in self.columns(table):
            raise ValueError(table)
        return {r["state"]: r["c"] for r in self.rows(f"SELECT state, COUNT(*) AS c FROM {table} GROUP BY state")}


class _Transaction:
    def __init__(self, db: Database):
        self.db = db

    def __enter__(self):
        self.db._lock.acquire()
        try:
            self.db._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.db._lock.release()
            raise
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.db._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.db._lock.release()


def add_column(table: str, column: str, decl: str) -> Migration:
    """A migration step adding ``column`` to ``table`` unless it is there already."""

    def step(conn: sqlite3.Connection) -> None:
        if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    step.__name__ = step.__qualname__ = f"add_{table}_{column}"
    return step


# --------------------------------------------------------------------------- log -> events
class EventHandler(logging.Handler):
    """Writes log records into ``db``'s events table: WARNING and above, and any record with the key extra.

    ``log.info("%s: queued", stem, extra={"part": stem})`` is logged and recorded as an ``info``
    event about ``stem``; ``log.warning(...)`` is recorded whether or not it names a part.
    """

    def __init__(self, db: Database, threshold: int = logging.WARNING):
        super().__init__(logging.NOTSET)
        self.db, self.threshold, self.key = db, threshold, db.EVENT_KEY
        self._restore: tuple[logging.Logger, int] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < self.threshold and not hasattr(record, self.key):
            return
        try:
            key = getattr(record, self.key, None)
            self.db.add_event(record.levelname.lower(), record.getMessage(), None if key is None else str(key),
                              now=record.created)
        except Exception:  # a closed DB, a locked one: never let logging break the caller
            self.handleError(record)


def install_event_handler(db: Database, logger: str | logging.Logger = "dwfhpc") -> EventHandler:
    """Attach an :class:`EventHandler` for ``db`` to ``logger`` (and its children); undo with :func:`remove_event_handler`.

    The logger is opened to INFO if it was quieter, so the events table does not depend on how
    verbose the console is (console handlers keep their own level).
    """
    log = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
    handler = EventHandler(db)
    if log.getEffectiveLevel() > logging.INFO:
        handler._restore = (log, log.level)
        log.setLevel(logging.INFO)
    log.addHandler(handler)
    handler._logger = log
    return handler


def remove_event_handler(handler: EventHandler) -> None:
    log = getattr(handler, "_logger", None)
    if log is None:
        return
    log.removeHandler(handler)
    if handler._restore and not any(isinstance(h, EventHandler) for h in log.handlers):
        log.setLevel(handler._restore[1])
    handler._logger = None


__all__ = ["Database", "EventHandler", "Migration", "add_column", "install_event_handler", "remove_event_handler"]
