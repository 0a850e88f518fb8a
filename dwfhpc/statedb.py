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
                 t_submitted, t_started, t_finished, resource_retries (retries after failures on a node's
                 resources, ``ErrorKind.RESOURCE``: not counted against ``ingest.max_attempts``)
``submissions``  id (key), part, executor, array job id, name, spec, folder, ntasks, t_submitted
``nights``       night (key), t_masters (when its masters were last built), masters (how many), reason
``events``       t, level, part, message
``skipped``      (part, ccd) key: a CCD a part carried that gets no task, and why: a known-bad CCD of the
                 instrument (``bad_ccds``: never processed), or a duplicate delivery (the same CCD of the same
                 night and exposure already queued, running or done from another part, e.g. ``p1of1``
                 then ``p1of2``); other_part names that part. Not a task: never calibrated, never counted as failed.
``node_failures`` node, t, part, ccd, reason: one row per task that failed on a node's own resources (its
                 scratch missing, too small or full; ENOSPC / EIO in it). Enough of them on one node within a
                 window exclude that node from new submissions (:meth:`StateDB.node_exclusions`).

States are the :mod:`dwfhpc.states` enums (stored as their strings). Final task states are
``done``, ``failed`` (the task kept failing; reason says why) and ``lost`` (it kept vanishing
without a result); tasks move only through :class:`StateDB`'s named transitions. Every write is
one short transaction, so a killed ingest leaves a consistent DB and a restarted one carries on
from it. Connection, WAL, lock, events and migrations (``PRAGMA user_version``) come from
:class:`dwfhpc.db.Database`.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import TYPE_CHECKING

from .db import Database, add_column
from .states import TASK_ACTIVE, TASK_FINAL, PartState, TaskState, part_state_from_tasks

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
    first_attempt INTEGER NOT NULL DEFAULT 1, waiting TEXT, resource_retries INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (part, ccd));
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, part TEXT NOT NULL, executor TEXT NOT NULL, job_id TEXT,
    name TEXT, spec TEXT, folder TEXT, ntasks INTEGER, t_submitted REAL);
CREATE TABLE IF NOT EXISTS nights (
    night TEXT PRIMARY KEY, t_masters REAL, masters INTEGER, reason TEXT);
CREATE TABLE IF NOT EXISTS events (
    t REAL NOT NULL, level TEXT NOT NULL, part TEXT, message TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stops (
    scope TEXT NOT NULL, name TEXT NOT NULL, reason TEXT NOT NULL, t REAL NOT NULL, PRIMARY KEY (scope, name));
CREATE TABLE IF NOT EXISTS skipped (
    part TEXT NOT NULL, ccd INTEGER NOT NULL, expid TEXT, night TEXT, kind TEXT, reason TEXT NOT NULL,
    other_part TEXT, t REAL, PRIMARY KEY (part, ccd));
CREATE TABLE IF NOT EXISTS node_failures (
    node TEXT NOT NULL, t REAL NOT NULL, part TEXT, ccd INTEGER, reason TEXT);
CREATE INDEX IF NOT EXISTS node_failures_t ON node_failures(t);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
CREATE INDEX IF NOT EXISTS tasks_exposure ON tasks(night, expid, ccd);
CREATE INDEX IF NOT EXISTS parts_state ON parts(state);
"""

#: schema steps by ``PRAGMA user_version`` (see :class:`dwfhpc.db.Database`)
MIGRATIONS = (
    add_column("tasks", "first_attempt", "INTEGER NOT NULL DEFAULT 1"),  # 1: reprocess budgets
    lambda conn: None,  # 2: the runaway-resubmission guard's ``stops`` table (created by SCHEMA)
    add_column("tasks", "waiting", "TEXT"),  # 3: what a pending task waits for, when not an ordinary slot
    lambda conn: None,  # 4: the ``skipped`` table (bad CCDs, duplicate deliveries; created by SCHEMA)
    # 5: resource failures: tasks.resource_retries and the ``node_failures`` table (created by SCHEMA)
    add_column("tasks", "resource_retries", "INTEGER NOT NULL DEFAULT 0"),
)

#: task states that mean a CCD is taken care of: another part carrying it again is a duplicate delivery
CARRIED = (TaskState.QUEUED, TaskState.SUBMITTED, TaskState.RUNNING, TaskState.DONE)


@lru_cache(maxsize=None)
def bad_ccds(instrument: str) -> tuple[int, ...]:
    """The instrument's known-bad CCDs from its shipped config (``bad_ccds``: never processed); () if unknown."""
    from .errors import DwfError
    from .instruments import instrument_for

    try:
        return tuple(instrument_for(instrument).bad_ccds)
    except DwfError:
        return ()

if TYPE_CHECKING:
    from .node.result import TaskResult

ACTIVE = tuple(sorted(TASK_ACTIVE))  # task states in the scheduler's hands (kept for older callers)
FINAL = tuple(sorted(TASK_FINAL))


from .statedb_rows import NodeExclusion, PartRow, SubmissionRow, TaskRow, _part_row, _task_row  # noqa: E402,F401


class StateDB(Database):
    """Thread-safe access to the state DB (one connection, one lock; WAL lets readers in alongside).

    Tasks change state only through the named transitions below (:meth:`mark_running`,
    :meth:`mark_missing`, :meth:`finish`, :meth:`fail`, :meth:`lose`, :meth:`requeue`, ...).
    """

    SCHEMA = SCHEMA
    MIGRATIONS = MIGRATIONS
    EVENT_KEY = "part"
    TIMEOUT = 60.0

    def __enter__(self) -> StateDB:
        return self

    # ---------------------------------------------------------------- parts
    def part(self, stem: str) -> PartRow | None:
        rows = self.rows("SELECT * FROM parts WHERE stem=?", (stem,))
        return _part_row(rows[0]) if rows else None

    def parts(self, *states: str, night: str | None = None) -> list[PartRow]:
        sql, args = "SELECT * FROM parts WHERE 1=1", []
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += states
        if night:
            sql += " AND night=?"
            args.append(night)
        return [_part_row(r) for r in self.rows(sql + " ORDER BY t_inbox, stem", args)]

    def add_part(self, manifest, *, stem: str, tar: str, manifest_path: str, t_inbox: float, mem_gb: float,
                 time_minutes: int, now: float | None = None) -> list[int]:
        """Record a verified part and queue one task per CCD, in one transaction; returns the CCDs queued.

        A CCD gets no task (a ``skipped`` row with the reason, and one event) when it is one of the
        instrument's known-bad CCDs, or when the same CCD of the same night and exposure is already
        queued, running or done from another part (the exposure delivered again under another part
        count): a CCD is calibrated once whatever part carried it (``dwfhpc reprocess`` runs it again).
        A part whose every CCD was skipped is ``done`` at once, with the reason.
        """
        now = now or time.time()
        bad = set(bad_ccds(manifest.instrument))
        skipped: list[tuple[int, str, str | None]] = []
        queued: list[int] = []
        with self.transaction():
            self.execute("INSERT INTO parts(stem, expid, k, n, instrument, night, kind, filter, field, expnum, tar,"
                         " manifest, sha256, bytes, state, t_inbox, t_verified) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         (stem, manifest.expid, manifest.part, manifest.parts, manifest.instrument, manifest.night,
                          manifest.kind, manifest.filter, manifest.field, manifest.expnum, tar, manifest_path,
                          manifest.tar_sha256, manifest.tar_bytes, PartState.QUEUED, t_inbox, now))
            carried = {r["ccd"]: (r["part"], r["state"]) for r in self.rows(
                f"SELECT ccd, part, state FROM tasks WHERE night=? AND expid=? AND part<>?"
                f" AND state IN ({','.join('?' * len(CARRIED))}) ORDER BY t_queued",
                (manifest.night, manifest.expid, stem, *CARRIED))}
            for ccd in manifest.ccds:
                if ccd in bad:
                    skipped.append((ccd, f"CCD {ccd} is a known-bad {manifest.instrument} CCD (bad_ccds in "
                                         f"configs/{manifest.instrument}.yaml): never processed", None))
                    continue
                if ccd in carried:
                    other, state = carried[ccd]
                    skipped.append((ccd, f"duplicate delivery: CCD {ccd} of {manifest.expid} is already {state} "
                                         f"from part {other}; not calibrated twice", other))
                    continue
                self.execute("INSERT INTO tasks(part, ccd, expid, night, kind, state, attempt, mem_gb, time_minutes,"
                             " t_queued) VALUES (?,?,?,?,?,?,1,?,?,?)",
                             (stem, ccd, manifest.expid, manifest.night, manifest.kind, TaskState.QUEUED, mem_gb,
                              time_minutes, now))
                queued.append(ccd)
            for ccd, reason, other in skipped:
                self.execute("INSERT OR REPLACE INTO skipped(part, ccd, expid, night, kind, reason, other_part, t)"
                             " VALUES (?,?,?,?,?,?,?,?)",
                             (stem, ccd, manifest.expid, manifest.night, manifest.kind, reason, other, now))
            if skipped and not queued:
                self.update("parts", {"stem": stem}, {"state": PartState.DONE, "t_done": now,
                                                      "reason": "no CCD to run: " + "; ".join(r for _, r, _ in skipped)})
        for ccd, reason, other in skipped:
            self.add_event("warning" if other else "info", f"{stem}: {reason}", stem, now)
        return queued

    def skipped(self, *, part: str | None = None, night: str | None = None) -> list[dict]:
        """CCDs parts carried that got no task (bad CCDs, duplicate deliveries), with the reason."""
        sql, args = "SELECT * FROM skipped WHERE 1=1", []
        for key, value in (("part", part), ("night", night)):
            if value is not None:
                sql += f" AND {key}=?"
                args.append(value)
        return [dict(r) for r in self.rows(sql + " ORDER BY t, part, ccd", args)]

    def quarantine_part(self, stem: str, expid: str, reason: str, t_inbox: float, sha256: str | None = None) -> None:
        """Record a part that failed verification (a later good copy may replace it)."""
        self.execute("INSERT OR REPLACE INTO parts(stem, expid, state, reason, sha256, t_inbox, t_verified)"
                     " VALUES (?,?,?,?,?,?,?)", (stem, expid, PartState.QUARANTINED, reason, sha256, t_inbox, time.time()))

    def forget_quarantined(self, stem: str) -> None:
        self.execute("DELETE FROM parts WHERE stem=? AND state=?", (stem, PartState.QUARANTINED))

    def refresh_part_state(self, stem: str, now: float | None = None) -> PartState:
        """Derive a part's state from its tasks: queued, active, done (all done) or failed (all final)."""
        with self._lock:
            tasks = self.rows("SELECT ccd, state, reason FROM tasks WHERE part=? ORDER BY ccd", (stem,))
            state = part_state_from_tasks(r["state"] for r in tasks)
            if not tasks and self.skipped(part=stem):  # every CCD skipped (bad, or carried by another part)
                return PartState.DONE
            part = self.part(stem)
            if part and part.state != state:
                finished = state in (PartState.DONE, PartState.FAILED)
                fields = {"state": state, "t_done": (now or time.time()) if finished else None}
                if state == PartState.FAILED:  # a failed part says why, from the tasks that did not end done
                    fields["reason"] = "; ".join(f"CCD {r['ccd']} {r['state']}: {r['reason'] or 'no reason recorded'}"
                                                 for r in tasks if r["state"] != TaskState.DONE)
                else:  # tasks never derive a quarantined part: any older reason no longer holds
                    fields["reason"] = None
                self.update("parts", {"stem": stem}, fields)
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
        return [_task_row(r) for r in self.rows(sql + " ORDER BY t_queued, part, ccd", args)]

    def task(self, part: str, ccd: int) -> TaskRow | None:
        rows = self.rows("SELECT * FROM tasks WHERE part=? AND ccd=?", (part, ccd))
        return _task_row(rows[0]) if rows else None

    def count_tasks(self, *states: str) -> int:
        marks = ",".join("?" * len(states))
        return int(self.rows(f"SELECT COUNT(*) AS c FROM tasks WHERE state IN ({marks})", states)[0]["c"])

    def _set_task(self, part: str, ccd: int, **fields) -> None:
        """The one place task columns are written (known columns only; JSON columns encoded)."""
        if fields.get("result") is not None and not isinstance(fields["result"], str):
            result = fields["result"]
            fields["result"] = result.to_json() if hasattr(result, "to_json") else json.dumps(result, default=str)
        if fields.get("prior_shift") is not None:
            fields["prior_shift"] = json.dumps(list(fields["prior_shift"]))
        self.update("tasks", {"part": part, "ccd": ccd}, fields)

    # transitions: queue -> submitted -> running -> done | failed | lost, or back to queued for a retry
    def mark_running(self, part: str, ccd: int) -> None:
        """The scheduler runs the task (it is back in sight if it was missing)."""
        self._set_task(part, ccd, state=TaskState.RUNNING, missing_since=None, waiting=None)

    def mark_pending(self, part: str, ccd: int, waiting: str | None = None) -> None:
        """The task waits in the scheduler's queue (back in sight if it was missing); ``waiting``: held
        for more than a free slot, and why (None: the ordinary wait)."""
        self._set_task(part, ccd, state=TaskState.SUBMITTED, missing_since=None, waiting=waiting)

    def mark_missing(self, part: str, ccd: int, since: float) -> None:
        """First poll that found the task neither queued nor finished."""
        self._set_task(part, ccd, missing_since=since)

    def finish(self, part: str, ccd: int, result: TaskResult, now: float | None = None) -> None:
        """The task is done with ``result`` (its timings give t_started / t_finished)."""
        self._set_task(part, ccd, state=TaskState.DONE, result=result, reason=None, waiting=None,
                       t_started=result.started, t_finished=result.finished or now or time.time(), missing_since=None)

    def record_attempt(self, part: str, ccd: int, result: TaskResult | None, now: float | None = None) -> None:
        """Keep a failed attempt's result and times (a retry or :meth:`fail` follows)."""
        if result is None:
            return
        self._set_task(part, ccd, result=result, t_started=result.started,
                       t_finished=result.finished or now or time.time())

    def fail(self, part: str, ccd: int, reason: str, now: float | None = None) -> None:
        """The task kept failing: final ``failed`` with ``reason``."""
        self._set_task(part, ccd, state=TaskState.FAILED, reason=reason, waiting=None,
                       t_finished=now or time.time(), missing_since=None)

    def lose(self, part: str, ccd: int, reason: str, now: float | None = None) -> None:
        """The task kept leaving the queue without a result: final ``lost`` with ``reason``."""
        self._set_task(part, ccd, state=TaskState.LOST, reason=reason, waiting=None,
                       t_finished=now or time.time(), missing_since=None)

    def requeue(self, part: str, ccd: int, *, attempt: int, reason: str | None, mem_gb: float | None = None,
                time_minutes: int | None = None, prior_shift: tuple[float, float] | None = None,
                new_budget: bool = False, delay: float = 0.0, resource_retries: int | None = None) -> None:
        """Put a task back in the queue for another attempt (resources and prior shift for that attempt).

        ``new_budget``: this attempt starts a fresh count against ``ingest.max_attempts`` (reprocess).
        ``delay``: it may not be submitted before ``delay`` seconds from now (its ``t_queued``).
        ``resource_retries``: the task's count of retries after failures on a node's resources, this one
        included (such an attempt is not counted against ``max_attempts``).
        """
        fields = dict(state=TaskState.QUEUED, attempt=attempt, reason=reason, submission=None, idx=None, job_id=None,
                      missing_since=None, t_queued=time.time() + delay, t_submitted=None, t_started=None,
                      t_finished=None, waiting=None)
        if new_budget:
            fields["first_attempt"] = attempt
            fields["resource_retries"] = 0
        if mem_gb is not None:
            fields["mem_gb"] = mem_gb
        if time_minutes is not None:
            fields["time_minutes"] = time_minutes
        if prior_shift is not None:
            fields["prior_shift"] = prior_shift
        if resource_retries is not None and not new_budget:
            fields["resource_retries"] = resource_retries
        self._set_task(part, ccd, **fields)

    # ---------------------------------------------------------------- submissions
    def add_submission(self, part: str, executor: str, job_id: str | None, name: str, spec: str,
                       folder: str | None, ccds: list[int], task_ids: list[str | None], now: float | None = None) -> int:
        """Record an array and mark its tasks submitted (index i runs ``ccds[i]``), in one transaction."""
        now = now or time.time()
        with self.transaction():
            cur = self.execute("INSERT INTO submissions(part, executor, job_id, name, spec, folder, ntasks, t_submitted)"
                               " VALUES (?,?,?,?,?,?,?,?)", (part, executor, job_id, name, spec, folder, len(ccds), now))
            sub_id = int(cur.lastrowid)
            for i, (ccd, tid) in enumerate(zip(ccds, task_ids, strict=True)):
                self._set_task(part, ccd, state=TaskState.SUBMITTED, submission=sub_id, idx=i, job_id=tid,
                               t_submitted=now, missing_since=None)
            self.execute("UPDATE parts SET t_submitted=COALESCE(t_submitted, ?), state=? WHERE stem=?",
                         (now, PartState.ACTIVE, part))
        return sub_id

    def submission(self, sub_id: int) -> SubmissionRow | None:
        rows = self.rows("SELECT * FROM submissions WHERE id=?", (sub_id,))
        return SubmissionRow(**dict(rows[0])) if rows else None

    def submissions(self) -> list[SubmissionRow]:
        return [SubmissionRow(**dict(r)) for r in self.rows("SELECT * FROM submissions ORDER BY id")]

    def last_part_submission_time(self) -> float | None:
        row = self.rows("SELECT MAX(t_submitted) AS t FROM parts")[0]
        return row["t"]

    # ---------------------------------------------------------------- nights
    def masters_built(self, night: str) -> float | None:
        rows = self.rows("SELECT t_masters FROM nights WHERE night=?", (night,))
        return rows[0]["t_masters"] if rows else None

    def set_masters_built(self, night: str, t: float, count: int, reason: str | None = None) -> None:
        self.execute("INSERT OR REPLACE INTO nights(night, t_masters, masters, reason) VALUES (?,?,?,?)",
                     (night, t, count, reason))

    # ---------------------------------------------------------------- runaway guard
    def resubmissions(self, *, expid: str | None = None, night: str | None = None) -> int:
        """Retries so far (attempts beyond each task's first) of one exposure or one night."""
        key, value = ("expid", expid) if expid is not None else ("night", night)
        row = self.rows(f"SELECT COALESCE(SUM(attempt - 1), 0) AS n FROM tasks WHERE {key}=?", (value,))[0]
        return int(row["n"])

    def stop_resubmitting(self, scope: str, name: str, reason: str, now: float | None = None) -> bool:
        """Record that ``scope`` (exposure | night) ``name`` is resubmitted no more; True the first time."""
        cur = self.execute("INSERT OR IGNORE INTO stops(scope, name, reason, t) VALUES (?,?,?,?)",
                           (scope, name, reason, now or time.time()))
        return cur.rowcount > 0

    def resubmission_stops(self, night: str | None = None) -> list[dict]:
        """Exposures and nights the guard stopped (for a night: its own and its exposures')."""
        rows = self.rows("SELECT scope, name, reason, t FROM stops ORDER BY t")
        if night is not None:
            exps = {r["expid"] for r in self.rows("SELECT DISTINCT expid FROM tasks WHERE night=?", (night,))}
            rows = [r for r in rows if (r["scope"] == "night" and r["name"] == night) or r["name"] in exps]
        return [dict(r) for r in rows]

    def stopped(self, expid: str, night: str) -> str | None:
        """Why this exposure may not be resubmitted, or None."""
        rows = self.rows("SELECT reason FROM stops WHERE (scope='exposure' AND name=?) OR (scope='night' AND name=?)",
                         (expid, night))
        return rows[0]["reason"] if rows else None

    # ---------------------------------------------------------------- nodes
    def record_node_failure(self, node: str, part: str | None, ccd: int | None, reason: str,
                            now: float | None = None) -> None:
        """A task failed on ``node``'s own resources (its scratch): one ``node_failures`` row."""
        self.execute("INSERT INTO node_failures(node, t, part, ccd, reason) VALUES (?,?,?,?,?)",
                     (node, now or time.time(), part, ccd, reason))

    def node_failures(self, node: str | None = None, since: float | None = None) -> list[dict]:
        """Resource failures (oldest first), of one node and / or after a time."""
        sql, args = "SELECT node, t, part, ccd, reason FROM node_failures WHERE 1=1", []
        if node is not None:
            sql += " AND node=?"
            args.append(node)
        if since is not None:
            sql += " AND t>?"
            args.append(since)
        return [dict(r) for r in self.rows(sql + " ORDER BY t, rowid", args)]

    def node_exclusions(self, now: float, threshold: int, window_seconds: float) -> list[NodeExclusion]:
        """Nodes with at least ``threshold`` resource failures in the ``window_seconds`` before ``now`` (by name).

        Such a node stays excluded until the failures that put it over the threshold are older than the
        window (``until``); ``threshold`` 0 excludes nothing.
        """
        if threshold <= 0:
            return []
        by_node: dict[str, list[dict]] = {}
        for row in self.node_failures(since=now - window_seconds):
            if row["t"] <= now:
                by_node.setdefault(row["node"], []).append(row)
        out = []
        for node, rows in sorted(by_node.items()):
            if len(rows) >= threshold:
                last = rows[-1]
                out.append(NodeExclusion(node=node, failures=len(rows), first=rows[0]["t"], last=last["t"],
                                         until=rows[-threshold]["t"] + window_seconds, reason=last["reason"],
                                         part=last["part"], ccd=last["ccd"]))
        return out

    def calibration_nights(self) -> dict[str, dict[str, float | int]]:
        """Per night with calibration tasks: how many are not final, and when the last one finished done."""
        out = {}
        final = ",".join("?" * len(TASK_FINAL))
        for r in self.rows(f"SELECT night, SUM(state NOT IN ({final})) AS pending,"
                           " MAX(CASE WHEN state=? THEN t_finished END) AS last_done"
                           " FROM tasks WHERE kind IN ('bias','flat') GROUP BY night", (*sorted(TASK_FINAL), TaskState.DONE)):
            out[r["night"]] = {"pending": int(r["pending"] or 0), "last_done": r["last_done"]}
        return out

    # ---------------------------------------------------------------- events, summary
    def event(self, level: str, message: str, part: str | None = None, now: float | None = None) -> None:
        """Record an event directly (code that logs uses :class:`dwfhpc.db.EventHandler` instead)."""
        self.add_event(level, message, part, now)

    def counts(self, table: str) -> dict[str, int]:
        if table not in ("parts", "tasks"):
            raise ValueError(table)
        return self.state_counts(table)
