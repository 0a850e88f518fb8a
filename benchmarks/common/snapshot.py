"""A private copy of a run's SQLite database for the analysis: the package's :class:`~dwfhpc.statedb.StateDB`
and :class:`~dwfhpc.push.Journal` may open it (they switch to WAL and migrate an older schema) while the
run's own file stays as the run left it."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def snapshot(db: Path, into: Path) -> Path:
    """Copy ``db`` (what its WAL holds too) through a read-only connection into the folder ``into``."""
    source = sqlite3.connect(f"file:{Path(db).resolve()}?mode=ro", uri=True, timeout=10)
    copy = Path(into) / Path(db).name
    target = sqlite3.connect(str(copy))
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    return copy
