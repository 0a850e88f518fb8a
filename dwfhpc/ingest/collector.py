"""Results -> state DB: one scheduler query per poll, then each active task's outcome.

Order matters: the queue is read *before* the result files, so a task that finished between the
two is seen as finished, never as lost. A task is collected once it has left the queue: until
then it holds its slot under ``--max-jobs`` (the result file is written just before it exits). A task neither queued nor finished is marked missing; if
it is still missing ``lost_after`` seconds later (covering result files slow to appear on a
shared file system) it is **lost**. This needs no accounting: without slurmdbd ``sacct`` fails
and submitit alone would wait for ever on a cancelled task. Nothing here ever blocks on a job.

Failed and lost tasks are retried up to ``max_attempts``: memory x2 after an out-of-memory kill,
time x2 after a timeout. A science CCD whose WCS check failed is retried with the median shift of
its neighbours in the same exposure. A task that keeps failing ends ``failed`` (or ``lost``)
with its reason.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..state import ACTIVE, StateDB, TaskRow
from .executors import ArrayExecutor, Outcome, reason_from_text

log = logging.getLogger("dwfhpc.ingest")
_PERMANENT = "does not match the manifest"  # an integrity error found on the node: not worth retrying


class Collector:
    def __init__(self, db: StateDB, executor: ArrayExecutor, *, max_attempts: int, lost_after: float):
        self.db, self.executor = db, executor
        self.max_attempts, self.lost_after = max_attempts, lost_after
        self._subs: dict[int, object] = {}

    def _submission(self, sub_id: int):
        if sub_id not in self._subs:
            self._subs[sub_id] = self.db.submission(sub_id)
        return self._subs[sub_id]

    def poll(self, now: float | None = None) -> dict[str, int]:
        """Collect what finished; returns counts of what happened this poll."""
        now = now or time.time()
        active = self.db.tasks(*ACTIVE)
        counts = {"done": 0, "failed": 0, "retried": 0, "lost": 0}
        if not active:
            return counts
        queued = self.executor.queue([t.job_id for t in active if t.job_id])  # the one scheduler query
        gone: list[TaskRow] = []
        touched: set[str] = set()
        for t in active:
            if t.job_id in queued:  # still holds its slot (even if its result is already written)
                state = "running" if queued[t.job_id] in ("RUNNING", "COMPLETING") else "submitted"
                if state != t.state or t.missing_since:
                    self.db.set_task(t.part, t.ccd, state=state, missing_since=None)
                continue
            sub = self._submission(t.submission)
            outcome = self.executor.outcome(sub.spec, t.idx, t.job_id, sub.folder) if sub else None
            if outcome is not None:
                counts[self._finished(t, outcome, now)] += 1
                touched.add(t.part)
            elif t.missing_since is None:
                self.db.set_task(t.part, t.ccd, missing_since=now)
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

    # ---------------------------------------------------------------- outcomes
    def _finished(self, t: TaskRow, outcome: Outcome, now: float) -> str:
        result = outcome.result
        started = (result or {}).get("started")
        finished = (result or {}).get("finished") or now
        if result and result.get("status") == "ok":
            wcs = result.get("wcs") or {}
            if t.kind == "science" and wcs.get("status") == "failed" and t.attempts_used < self.max_attempts:
                shift = self.neighbour_shift(t)
                if shift is not None:
                    return self._retry(t, f"WCS check failed ({wcs.get('reason') or 'no match'}); "
                                          f"retrying with the neighbours' shift {shift[0]:+.2f}\", {shift[1]:+.2f}\"",
                                       prior_shift=shift)
            self.db.set_task(t.part, t.ccd, state="done", result=result, reason=None, t_started=started,
                             t_finished=finished, missing_since=None)
            return "done"
        error = (result or {}).get("error") or outcome.error or "task failed without a reason"
        self.db.set_task(t.part, t.ccd, result=result, t_started=started, t_finished=finished)
        kind = "oom" if reason_from_text(error) == "oom" else "timeout" if reason_from_text(error) == "timeout" else None
        if _PERMANENT in error:  # the stored part disagrees with its manifest: another attempt reads the same bytes
            return self._end(t, error, "failed")
        return self._retry_or_end(t, error, kind, final_state="failed")

    def _lost(self, t: TaskRow, why: str | None, now: float) -> str:
        reason = f"lost: left the queue without a result ({why or 'no reason known'})"
        return self._retry_or_end(t, reason, why, final_state="lost")

    def _retry_or_end(self, t: TaskRow, reason: str, kind: str | None, *, final_state: str) -> str:
        if t.attempts_used < self.max_attempts:
            return self._retry(t, reason, escalate=kind)
        return self._end(t, reason, final_state)

    def _end(self, t: TaskRow, reason: str, final_state: str) -> str:
        self.db.set_task(t.part, t.ccd, state=final_state, reason=reason, t_finished=time.time(), missing_since=None)
        self.db.event("error", f"{t.part} CCD {t.ccd}: {final_state} after {t.attempt} attempts: {reason}", t.part)
        log.error("%s CCD %d: %s after %d attempts: %s", t.part, t.ccd, final_state, t.attempt, reason)
        return "failed" if final_state == "failed" else "lost"

    def _retry(self, t: TaskRow, reason: str, *, escalate: str | None = None,
               prior_shift: tuple[float, float] | None = None) -> str:
        mem = t.mem_gb * 2 if escalate == "oom" and t.mem_gb else None
        minutes = t.time_minutes * 2 if escalate == "timeout" and t.time_minutes else None
        self.db.requeue(t.part, t.ccd, attempt=t.attempt + 1, reason=reason, mem_gb=mem, time_minutes=minutes,
                        prior_shift=prior_shift)
        more = (f", memory {mem:g} GB" if mem else "") + (f", time {minutes} min" if minutes else "")
        self.db.event("warning", f"{t.part} CCD {t.ccd}: attempt {t.attempt} {reason}; retrying{more}", t.part)
        log.warning("%s CCD %d: attempt %d %s; retrying%s", t.part, t.ccd, t.attempt, reason, more)
        return "retried"

    def neighbour_shift(self, t: TaskRow) -> tuple[float, float] | None:
        """Median WCS shift of the CCDs of the same exposure whose check succeeded."""
        shifts = []
        for other in self.db.tasks("done", expid=t.expid):
            wcs = (other.result or {}).get("wcs") or {}
            if wcs.get("status") == "ok":
                shifts.append((wcs.get("dx", 0.0), wcs.get("dy", 0.0)))
        if not shifts:
            return None
        arr = np.asarray(shifts, dtype=float)
        return float(np.median(arr[:, 0])), float(np.median(arr[:, 1]))
