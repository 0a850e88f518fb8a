"""Results -> state DB: one scheduler query per poll, then each active task's outcome.

Order matters: the queue is read *before* the result files, so a task that finished between the
two is seen as finished, never as lost. A task is collected once it has left the queue: until
then it holds its slot under ``--max-jobs`` (the result file is written just before it exits). A task neither queued nor finished is marked missing; if
it is still missing ``lost_after`` seconds later (covering result files slow to appear on a
shared file system) it is **lost**. This needs no accounting: without slurmdbd ``sacct`` fails
and submitit alone would wait for ever on a cancelled task. Nothing here ever blocks on a job.

Failed and lost tasks are retried up to ``max_attempts``, each after ``retry_delay`` seconds doubling
per attempt (a full scratch or a node hiccup gets time to clear), by the failure's
:class:`~dwfhpc.node.result.ErrorKind` (the node's word, or the scheduler's for a vanished task):
memory x2 after ``out_of_memory``, time x2 after ``timeout`` or ``interrupted`` (SIGTERM comes at
the time limit too), never again after ``integrity`` (the stored part disagrees with its manifest:
another attempt reads the same bytes). A science CCD whose WCS check failed is retried with the
median shift of its neighbours in the same exposure. A task that keeps failing ends ``failed``
(or ``lost``) with its reason. A runaway guard caps resubmissions per exposure and per night: past
the ceiling that exposure (or night) is resubmitted no more (recorded in the ``stops`` table, shown
by ``dwfhpc status`` and the report) and the rest of the night goes on. Retries and final failures
are logged (and so recorded as events). A pending task that the scheduler holds for more than a free
slot (a delayed start after a failed launch, an admin hold, a node or partition down) carries that
reason in the state DB (``tasks.waiting``, shown by ``dwfhpc status``) and in one logged event.

A failure of the node's own resources (``resource``: its scratch missing, too small or full, ENOSPC / EIO
in it) is the node's fault, not the CCD's: it is recorded against the node (``node_failures``, the
result's ``host``) and the CCD is retried at once **without** using up its ``max_attempts``, up to
``max_resource_retries`` times (past those such failures count as ordinary attempts, so nothing loops
for ever). Enough of them on one node exclude that node from new submissions
(:meth:`dwfhpc.ingest.submitter.Submitter.update_exclusions`), so the retry lands elsewhere.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..config import IngestSettings
from ..node.result import ErrorKind, TaskResult, WcsStatus, node_name
from ..statedb import StateDB, TaskRow
from ..scheduler.slurm import waiting as scheduler_waiting
from ..states import TASK_ACTIVE, QueueEntry, TaskState
from .executors import ArrayExecutor, Outcome

log = logging.getLogger(__name__)

#: failures another attempt cannot fix
PERMANENT = frozenset({ErrorKind.INTEGRITY})
#: what the next attempt gets more of, by kind
ESCALATE = {ErrorKind.OUT_OF_MEMORY: "memory", ErrorKind.TIMEOUT: "time", ErrorKind.INTERRUPTED: "time"}
#: failures of the node, not of the CCD: retried without counting as attempts, recorded against the node
NODE_RESOURCE = frozenset({ErrorKind.RESOURCE})
#: ``ingest.max_resource_retries`` when the caller gives none
DEFAULT_MAX_RESOURCE_RETRIES = IngestSettings.model_fields["max_resource_retries"].default


class Collector:
    def __init__(self, db: StateDB, executor: ArrayExecutor, *, max_attempts: int, lost_after: float,
                 max_resubmits_per_exposure: int | None = None, max_resubmits_per_night: int | None = None,
                 retry_delay: float = 0.0, max_resource_retries: int | None = None):
        self.db, self.executor = db, executor
        self.max_attempts, self.lost_after = max_attempts, lost_after
        self.max_per_exposure, self.max_per_night = max_resubmits_per_exposure, max_resubmits_per_night
        self.retry_delay = retry_delay
        self.max_resource_retries = DEFAULT_MAX_RESOURCE_RETRIES if max_resource_retries is None else max_resource_retries
        self._subs: dict[int, object] = {}

    def _submission(self, sub_id: int):
        if sub_id not in self._subs:
            self._subs[sub_id] = self.db.submission(sub_id)
        return self._subs[sub_id]

    def poll(self, now: float | None = None) -> dict[str, int]:
        """Collect what finished; returns counts of what happened this poll."""
        now = now or time.time()
        active = self.db.tasks(*TASK_ACTIVE)
        counts = {TaskState.DONE: 0, TaskState.FAILED: 0, "retried": 0, TaskState.LOST: 0}
        if not active:
            self.executor.idle_poll()  # e.g. keep a worker pool full while nothing is in flight
            return counts
        queued = self.executor.queue([t.job_id for t in active if t.job_id])  # the one scheduler query
        gone: list[TaskRow] = []
        touched: set[str] = set()
        for t in active:
            if t.job_id in queued:  # still holds its slot (even if its result is already written)
                entry = queued[t.job_id]
                if entry.running and (t.state != TaskState.RUNNING or t.missing_since):
                    self.db.mark_running(t.part, t.ccd)
                elif not entry.running:
                    waiting = self._waiting(t, entry)
                    if t.state != TaskState.SUBMITTED or t.missing_since or waiting != t.waiting:
                        self.db.mark_pending(t.part, t.ccd, waiting)
                continue
            sub = self._submission(t.submission)
            outcome = self.executor.outcome(sub.spec, t.idx, t.job_id, sub.folder) if sub else None
            if outcome is not None:
                counts[self._finished(t, outcome, now)] += 1
                touched.add(t.part)
            elif t.missing_since is None:
                self.db.mark_missing(t.part, t.ccd, now)
            elif now - t.missing_since >= self.lost_after:
                gone.append(t)
        if gone:
            reasons = self.executor.gone_reasons([(t.job_id, self._submission(t.submission).folder) for t in gone])
            for t in gone:
                counts[self._lost(t, reasons.get(t.job_id), now)] += 1
                touched.add(t.part)
        for part in touched:
            self.db.refresh_part_state(part, now)
        return counts

    def _waiting(self, t: TaskRow, entry: QueueEntry) -> str | None:
        """``REASON: meaning`` when the scheduler holds ``t`` for more than a free slot (logged once per reason;
        the reason words are Slurm's: :func:`dwfhpc.scheduler.slurm.waiting`)."""
        waiting = scheduler_waiting(entry.reason)
        if waiting is None:
            return None
        if waiting != t.waiting:
            log.warning("%s CCD %d: pending in the scheduler as %s (job %s)", t.part, t.ccd, waiting, t.job_id,
                        extra={"part": t.part})
        return waiting

    # ---------------------------------------------------------------- outcomes
    def _finished(self, t: TaskRow, outcome: Outcome, now: float) -> str:
        result = outcome.result
        if outcome.ok:
            wcs = result.wcs
            if t.kind == "science" and wcs.status == WcsStatus.FAILED and t.attempts_used < self.max_attempts:
                shift = self.neighbour_shift(t)
                if shift is not None:
                    return self._retry(t, f"WCS check failed ({wcs.reason or 'no match'}); "
                                          f"retrying with the neighbours' shift {shift[0]:+.2f}\", {shift[1]:+.2f}\"",
                                       prior_shift=shift)
            self.db.finish(t.part, t.ccd, result, now)
            return TaskState.DONE
        kind, error = outcome.error_kind, outcome.message
        self.db.record_attempt(t.part, t.ccd, result, now)
        if kind in PERMANENT:
            return self._end(t, error, TaskState.FAILED)
        if kind in NODE_RESOURCE:
            return self._node_failed(t, result, error, kind, now)
        return self._retry_or_end(t, error, kind, final_state=TaskState.FAILED)

    def _node_failed(self, t: TaskRow, result: TaskResult | None, error: str, kind: ErrorKind, now: float) -> str:
        """The node's resources failed: recorded against the node; the CCD retried at once, its attempts kept."""
        node = node_name(result.host if result is not None else None)
        if node:
            self.db.record_node_failure(node, t.part, t.ccd, error, now)
        where = f"on node {node}" if node else "on an unknown node"
        if t.resource_retries < self.max_resource_retries:
            n = t.resource_retries + 1
            return self._retry(t, f"{where}: {error}", resource_retries=n,
                               note=f" (node resources: not counted as an attempt, {n} of {self.max_resource_retries})")
        return self._retry_or_end(t, f"{where}: {error} ({self.max_resource_retries} retries after node resource "
                                     f"failures used up: counted as an attempt)", kind, final_state=TaskState.FAILED)

    def _lost(self, t: TaskRow, why: str | None, now: float) -> str:
        reason = f"lost: left the queue without a result ({why or 'no reason known'})"
        return self._retry_or_end(t, reason, ErrorKind.from_scheduler(why), final_state=TaskState.LOST)

    def _retry_or_end(self, t: TaskRow, reason: str, kind: ErrorKind | None, *, final_state: TaskState) -> str:
        if t.attempts_used < self.max_attempts:
            return self._retry(t, reason, escalate=ESCALATE.get(kind),
                               delay=self.retry_delay * 2 ** (t.attempts_used - 1))
        return self._end(t, reason, final_state)

    def _end(self, t: TaskRow, reason: str, final_state: TaskState) -> str:
        if final_state == TaskState.LOST:
            self.db.lose(t.part, t.ccd, reason)
        else:
            self.db.fail(t.part, t.ccd, reason)
        nodes = f" ({t.resource_retries} of them failed on a node's resources)" if t.resource_retries else ""
        log.error("%s CCD %d: %s after %d attempts%s: %s", t.part, t.ccd, final_state, t.attempt, nodes, reason,
                  extra={"part": t.part})
        return final_state

    def _ceiling(self, t: TaskRow) -> str | None:
        """The runaway guard: why this task's exposure or night may be resubmitted no more, or None."""
        if (stopped := self.db.stopped(t.expid, t.night)) is not None:
            return stopped
        for scope, name, limit, used in (
                ("exposure", t.expid, self.max_per_exposure, lambda: self.db.resubmissions(expid=t.expid)),
                ("night", t.night, self.max_per_night, lambda: self.db.resubmissions(night=t.night))):
            if limit is not None and (n := used()) >= limit:
                why = f"resubmission ceiling: {scope} {name} was resubmitted {n} times (limit {limit})"
                if self.db.stop_resubmitting(scope, name, why):
                    log.error("%s: no more resubmissions for this %s; the rest of the night goes on", why, scope,
                              extra={"part": t.part})
                return why
        return None

    def _retry(self, t: TaskRow, reason: str, *, escalate: str | None = None,
               prior_shift: tuple[float, float] | None = None, delay: float = 0.0,
               resource_retries: int | None = None, note: str = "") -> str:
        if (ceiling := self._ceiling(t)) is not None:
            return self._end(t, f"{reason}; not retried: {ceiling}", TaskState.FAILED)
        mem = t.mem_gb * 2 if escalate == "memory" and t.mem_gb else None
        minutes = t.time_minutes * 2 if escalate == "time" and t.time_minutes else None
        self.db.requeue(t.part, t.ccd, attempt=t.attempt + 1, reason=reason, mem_gb=mem, time_minutes=minutes,
                        prior_shift=prior_shift, delay=delay, resource_retries=resource_retries)
        more = ((f", memory {mem:g} GB" if mem else "") + (f", time {minutes} min" if minutes else "")
                + (f" in {delay:g} s" if delay else "") + note)
        log.warning("%s CCD %d: attempt %d %s; retrying%s", t.part, t.ccd, t.attempt, reason, more,
                    extra={"part": t.part})
        return "retried"

    def neighbour_shift(self, t: TaskRow) -> tuple[float, float] | None:
        """Median WCS shift of the CCDs of the same exposure whose check succeeded."""
        shifts = []
        for other in self.db.tasks(TaskState.DONE, expid=t.expid):
            shift = other.result.wcs.shift if other.result else None
            if shift is not None:
                shifts.append(shift)
        if not shifts:
            return None
        arr = np.asarray(shifts, dtype=float)
        return float(np.median(arr[:, 0])), float(np.median(arr[:, 1]))


__all__ = ["Collector", "ESCALATE", "NODE_RESOURCE", "PERMANENT"]
