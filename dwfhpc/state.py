"""The cluster side's state: SQLite (WAL) record of every part, array submission and CCD task.

Tables (times are Unix seconds, UTC):

``parts``        stem (key, ``<expid>.p<k>of<K>``), identity from the manifest (expid, k, n, instrument,
                 night, kind, filter, field, expnum), tar + manifest (where the verified part is kept),
                 sha256, bytes, state queued|active|done|failed|quarantined, reason,
                 t_inbox (manifest seen in the inbox), t_verified, t_submitted (first array), t_done
``tasks``        (part, ccd) key: one CCD of a part. state queued|submitted|running|done|failed|lost,
                 attempt (1-based), resources of the current attempt (mem_gb, time_minutes),
                 prior_shift (JSON [dx, dy] for a WCS retry), submission + idx (array index),
                 job_id (scheduler's id of this task), missing_since (first poll the task was neither in
                 the queue nor finished), reason, result (the node's result JSON), t_queued,
                 t_submitted, t_started, t_finished
``submissions``  id (key), part, executor, array job id, name, spec, folder, ntasks, t_submitted
``nights``       night (key), t_masters (when its masters were last built), masters (how many), reason
``events``       t, level, part, message

Final task states are ``done``, ``failed`` (the task kept failing; reason says why) and ``lost`` (it
kept vanishing without a result). Every write is one short transaction, so a killed ingest
leaves a consistent DB and a restarted one carries on from it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS parts (
    stem TEXT PRIMARY KEY, expid TEXT NOT NULL, k INTEGER, n INTEGER, instrument TEXT, night TEXT,
    kind TEXT, filter TEXT, field TEXT, expnum INTEGER, tar TEXT, manifest TEXT, sha256 TEXT, bytes INTEGER,
    state TEXT NOT NULL, reason TEXT, t_inbox REAL, t_verified REAL, t_submitted REAL, t_done REAL);
CREATE TABLE IF NOT EXISTS tasks (
    part TEXT NOT NULL, ccd INTEGER NOT NULL, expid TEXT NOT NULL, night TEXT, kind TEXT,
    state TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 1, mem_gb REAL, time_minutes INTEGER,
    prior_shift TEXT, submission INTEGER, idx INTEGER, job_id TEXT, missing_since REAL, reason TEXT,
    result TEXT, t_queued REAL, t_submitted REAL, t_started REAL, t_finished REAL,
    first_attempt INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (part, ccd));
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, part TEXT NOT NULL, executor TEXT NOT NULL, job_id TEXT,
    name TEXT, spec TEXT, folder TEXT, ntasks INTEGER, t_submitted REAL);
CREATE TABLE IF NOT EXISTS nights (
    night TEXT PRIMARY KEY, t_masters REAL, masters INTEGER, reason TEXT);
CREATE TABLE IF NOT EXISTS events (
    t REAL NOT NULL, level TEXT NOT NULL, part TEXT, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
CREATE INDEX IF NOT EXISTS parts_state ON parts(state);
"""

ACTIVE = ("submitted", "running")
FINAL = ("done", "failed", "lost")


@dataclass(frozen=True)
class PartRow:
    stem: str
    expid: str
    k: int
    n: int
    instrument: str
    night: str
    kind: str
    filter: str
    field: str
    expnum: int
    tar: str
    manifest: str
    sha256: str
    bytes: int
    state: str
    reason: str | None
    t_inbox: float | None
    t_verified: float | None
    t_submitted: float | None
    t_done: float | None


@dataclass(frozen=True)
class TaskRow:
    part: str
    ccd: int
    expid: str
    night: str
    kind: str
    state: str
    attempt: int
    mem_gb: float | None
    time_minutes: int | None
    prior_shift: tuple[float, float] | None
    submission: int | None
    idx: int | None
    job_id: str | None
    missing_since: float | None
    reason: str | None
    result: dict | None
    t_queued: float | None
    t_submitted: float | None
    t_started: float | None
    t_finished: float | None
    first_attempt: int = 1  # where this run's retry budget starts (a reprocess starts a new one)

    @property
    def attempts_used(self) -> int:
        """Attempts counted against ``ingest.max_attempts``."""
        return self.attempt - self.first_attempt + 1


@dataclass(frozen=True)
class SubmissionRow:
    id: int
    part: str
    executor: str
    job_id: str | None
    name: str
    spec: str
    folder: str | None
    ntasks: int
    t_submitted: float


class StateDB:
    """Thread-safe access to the state DB (one connection, one lock; WAL lets readers in alongside)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=60)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(tasks)")}
        if "first_attempt" not in columns:  # a state DB written before reprocess budgets existed
            self._db.execute("ALTER TABLE tasks ADD COLUMN first_attempt INTEGER NOT NULL DEFAULT 1")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _exec(self, sql: str, args: Iterable = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, tuple(args))

    def _rows(self, sql: str, args: Iterable = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def transaction(self):
        """``with db.transaction():`` groups writes (BEGIN IMMEDIATE ... COMMIT, rolled back on error)."""
        return _Transaction(self)

    # ---------------------------------------------------------------- parts
    def part(self, stem: str) -> PartRow | None:
        rows = self._rows("SELECT * FROM parts WHERE stem=?", (stem,))
        return PartRow(**dict(rows[0])) if rows else None

    def parts(self, *states: str, night: str | None = None) -> list[PartRow]:
        sql, args = "SELECT * FROM parts WHERE 1=1", []
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += states
        if night:
            sql += " AND night=?"
            args.append(night)
        return [PartRow(**dict(r)) for r in self._rows(sql + " ORDER BY t_inbox, stem", args)]

    def add_part(self, manifest, *, stem: str, tar: str, manifest_path: str, t_inbox: float, mem_gb: float,
                 time_minutes: int, now: float | None = None) -> None:
        """Record a verified part and queue one task per CCD, in one transaction."""
        now = now or time.time()
        with self.transaction():
            self._exec("INSERT INTO parts(stem, expid, k, n, instrument, night, kind, filter, field, expnum, tar,"
                       " manifest, sha256, bytes, state, t_inbox, t_verified) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (stem, manifest.expid, manifest.part, manifest.parts, manifest.instrument, manifest.night,
                        manifest.kind, manifest.filter, manifest.field, manifest.expnum, tar, manifest_path,
                        manifest.tar_sha256, manifest.tar_bytes, "queued", t_inbox, now))
            for ccd in manifest.ccds:
                self._exec("INSERT INTO tasks(part, ccd, expid, night, kind, state, attempt, mem_gb, time_minutes,"
                           " t_queued) VALUES (?,?,?,?,?,'queued',1,?,?,?)",
                           (stem, ccd, manifest.expid, manifest.night, manifest.kind, mem_gb, time_minutes, now))

    def quarantine_part(self, stem: str, expid: str, reason: str, t_inbox: float, sha256: str | None = None) -> None:
        """Record a part that failed verification (a later good copy may replace it)."""
        self._exec("INSERT OR REPLACE INTO parts(stem, expid, state, reason, sha256, t_inbox, t_verified)"
                   " VALUES (?,?,?,?,?,?,?)", (stem, expid, "quarantined", reason, sha256, t_inbox, time.time()))

    def forget_quarantined(self, stem: str) -> None:
        self._exec("DELETE FROM parts WHERE stem=? AND state='quarantined'", (stem,))

    def set_part(self, stem: str, **fields) -> None:
        keys = ", ".join(f"{k}=?" for k in fields)
        self._exec(f"UPDATE parts SET {keys} WHERE stem=?", (*fields.values(), stem))

    def refresh_part_state(self, stem: str, now: float | None = None) -> str:
        """Derive a part's state from its tasks: queued, active, done (all done) or failed (all final)."""
        with self._lock:
            counts = {r["state"]: r["c"] for r in
                      self._rows("SELECT state, COUNT(*) AS c FROM tasks WHERE part=? GROUP BY state", (stem,))}
            total = sum(counts.values())
            final = sum(counts.get(s, 0) for s in FINAL)
            if total and counts.get("done", 0) == total:
                state = "done"
            elif total and final == total:
                state = "failed"
            elif counts.get("queued", 0) == total:
                state = "queued"
            else:
                state = "active"
            part = self.part(stem)
            if part and part.state != state:
                self.set_part(stem, state=state, t_done=(now or time.time()) if state in ("done", "failed") else None)
            return state

    # ---------------------------------------------------------------- tasks
    def tasks(self, *states: str, part: str | None = None, expid: str | None = None,
              night: str | None = None) -> list[TaskRow]:
        sql, args = "SELECT * FROM tasks WHERE 1=1", []
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += states
        for key, value in (("part", part), ("expid", expid), ("night", night)):
            if value is not None:
                sql += f" AND {key}=?"
                args.append(value)
        return [_task_row(r) for r in self._rows(sql + " ORDER BY t_queued, part, ccd", args)]

    def count_tasks(self, *states: str) -> int:
        marks = ",".join("?" * len(states))
        return int(self._rows(f"SELECT COUNT(*) AS c FROM tasks WHERE state IN ({marks})", states)[0]["c"])

    def set_task(self, part: str, ccd: int, **fields) -> None:
        if "result" in fields and fields["result"] is not None and not isinstance(fields["result"], str):
            fields["result"] = json.dumps(fields["result"], default=str)
        if "prior_shift" in fields and fields["prior_shift"] is not None:
            fields["prior_shift"] = json.dumps(list(fields["prior_shift"]))
        keys = ", ".join(f"{k}=?" for k in fields)
        self._exec(f"UPDATE tasks SET {keys} WHERE part=? AND ccd=?", (*fields.values(), part, ccd))

    def requeue(self, part: str, ccd: int, *, attempt: int, reason: str | None, mem_gb: float | None = None,
                time_minutes: int | None = None, prior_shift: tuple[float, float] | None = None,
                new_budget: bool = False) -> None:
        """Put a task back in the queue for another attempt (resources and prior shift for that attempt).

        ``new_budget``: this attempt starts a fresh count against ``ingest.max_attempts`` (reprocess).
        """
        fields = dict(state="queued", attempt=attempt, reason=reason, submission=None, idx=None, job_id=None,
                      missing_since=None, t_queued=time.time(), t_submitted=None, t_started=None, t_finished=None)
        if new_budget:
            fields["first_attempt"] = attempt
        if mem_gb is not None:
            fields["mem_gb"] = mem_gb
        if time_minutes is not None:
            fields["time_minutes"] = time_minutes
        if prior_shift is not None:
            fields["prior_shift"] = prior_shift
        self.set_task(part, ccd, **fields)

    # ---------------------------------------------------------------- submissions
    def add_submission(self, part: str, executor: str, job_id: str | None, name: str, spec: str,
                       folder: str | None, ccds: list[int], task_ids: list[str | None], now: float | None = None) -> int:
        """Record an array and mark its tasks submitted (index i runs ``ccds[i]``), in one transaction."""
        now = now or time.time()
        with self.transaction():
            cur = self._exec("INSERT INTO submissions(part, executor, job_id, name, spec, folder, ntasks, t_submitted)"
                             " VALUES (?,?,?,?,?,?,?,?)", (part, executor, job_id, name, spec, folder, len(ccds), now))
            sub_id = int(cur.lastrowid)
            for i, (ccd, tid) in enumerate(zip(ccds, task_ids, strict=True)):
                self.set_task(part, ccd, state="submitted", submission=sub_id, idx=i, job_id=tid, t_submitted=now,
                              missing_since=None)
            self._exec("UPDATE parts SET t_submitted=COALESCE(t_submitted, ?), state='active' WHERE stem=?", (now, part))
        return sub_id

    def submission(self, sub_id: int) -> SubmissionRow | None:
        rows = self._rows("SELECT * FROM submissions WHERE id=?", (sub_id,))
        return SubmissionRow(**dict(rows[0])) if rows else None

    def submissions(self) -> list[SubmissionRow]:
        return [SubmissionRow(**dict(r)) for r in self._rows("SELECT * FROM submissions ORDER BY id")]

    def last_part_submission_time(self) -> float | None:
        row = self._rows("SELECT MAX(t_submitted) AS t FROM parts")[0]
        return row["t"]

    # ---------------------------------------------------------------- nights
    def masters_built(self, night: str) -> float | None:
        rows = self._rows("SELECT t_masters FROM nights WHERE night=?", (night,))
        return rows[0]["t_masters"] if rows else None

    def set_masters_built(self, night: str, t: float, count: int, reason: str | None = None) -> None:
        self._exec("INSERT OR REPLACE INTO nights(night, t_masters, masters, reason) VALUES (?,?,?,?)",
                   (night, t, count, reason))

    def calibration_nights(self) -> dict[str, dict[str, float | int]]:
        """Per night with calibration tasks: how many are not final, and when the last one finished done."""
        out = {}
        for r in self._rows("SELECT night, SUM(state NOT IN ('done','failed','lost')) AS pending,"
                            " MAX(CASE WHEN state='done' THEN t_finished END) AS last_done"
                            " FROM tasks WHERE kind IN ('bias','flat') GROUP BY night"):
            out[r["night"]] = {"pending": int(r["pending"] or 0), "last_done": r["last_done"]}
        return out

    # ---------------------------------------------------------------- events, summary
    def event(self, level: str, message: str, part: str | None = None, now: float | None = None) -> None:
        self._exec("INSERT INTO events(t, level, part, message) VALUES (?,?,?,?)", (now or time.time(), level, part, message))

    def events(self, limit: int = 50, level: str | None = None) -> list[sqlite3.Row]:
        if level:
            return self._rows("SELECT * FROM events WHERE level=? ORDER BY t DESC LIMIT ?", (level, limit))
        return self._rows("SELECT * FROM events ORDER BY t DESC LIMIT ?", (limit,))

    def counts(self, table: str) -> dict[str, int]:
        if table not in ("parts", "tasks"):
            raise ValueError(table)
        return {r["state"]: r["c"] for r in self._rows(f"SELECT state, COUNT(*) AS c FROM {table} GROUP BY state")}


class _Transaction:
    def __init__(self, db: StateDB):
        self.db = db

    def __enter__(self) -> StateDB:
        self.db._lock.acquire()
        self.db._db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.db._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.db._lock.release()


def _task_row(r: sqlite3.Row) -> TaskRow:
    d = dict(r)
    d["result"] = json.loads(d["result"]) if d["result"] else None
    d["prior_shift"] = tuple(json.loads(d["prior_shift"])) if d["prior_shift"] else None
    return TaskRow(**d)
