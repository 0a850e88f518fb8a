"""One CCD's way from the telescope to its products, as times and stages: what the night report and the
benchmarks both read (:func:`ccd_timelines`).

Times (Unix seconds; None where the record does not say) come from the push journal (telescope side:
file complete, part packed, part confirmed at the cluster) when it is on this machine, the state DB (the
part in the inbox, verified, the task submitted) and the node's result (a warm worker's claim, started,
finished, and the node's own stage timings). The stages are the differences:

==============  ========================================================================================
pack            exposure complete -> its part packed (journal)
transfer        part packed -> confirmed at the cluster (journal)
inbox           confirmed -> verified in the inbox (journal + state DB)
hold            verified -> the task submitted (masters, throttles, the array or the worker ticket)
queue           submitted -> node code started; in worker mode split at the claim into
                ``wait_worker`` (all workers busy), ``dispatch`` (a worker free -> it claimed the CCD) and
                ``start`` (claimed -> node code started)
stage           the node's stage + verify + decompress
calibrate       the node's calibrate + QA
copyback        the node's copy back
other           total (complete -> finished) minus the stages above
==============  ========================================================================================
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..statedb import StateDB
from ..statedb_rows import PartRow, TaskRow
from ..states import TaskState

if TYPE_CHECKING:
    from ..push.journal import ExposureRow, Journal, SentPart

#: the stages of :meth:`CcdTimeline.stages` in order (arrays: no wait_worker / dispatch / start)
STAGES = ("pack", "transfer", "inbox", "hold", "queue", "wait_worker", "dispatch", "start", "stage", "calibrate",
          "copyback", "other")
#: the node's timings that make up each node stage
NODE_STAGES = {"stage": ("stage", "verify", "decompress"), "calibrate": ("calibrate", "qa"), "copyback": ("copyback",)}


@dataclass
class CcdTimeline:
    """When one CCD (its last attempt) passed each point, and the node's own timings."""

    part: str
    ccd: int
    expid: str
    kind: str
    state: TaskState
    attempt: int
    complete: float | None = None  # the exposure's file complete at the telescope (journal)
    packed: float | None = None  # its part packed (journal)
    confirmed: float | None = None  # the part confirmed at the cluster (journal)
    inbox: float | None = None  # the part seen in the inbox (state DB)
    verified: float | None = None
    submitted: float | None = None  # the task's array submitted, or its worker ticket written
    claimed: float | None = None  # worker mode: a warm worker claimed the CCD
    started: float | None = None  # the node code started on the CCD
    finished: float | None = None
    timings: dict[str, float] = field(default_factory=dict)  # the node's seconds by step
    job_id: str | None = None  # the scheduler's id of the task (arrays) or of its worker ticket
    worker: str | None = None  # worker mode: the warm worker that ran it, and its preload of the calibrations
    preload: float | None = None
    host: str | None = None
    #: worker mode, set by :func:`split_worker_queue`: waiting for a free worker / a free worker -> claimed
    wait_worker: float | None = None
    dispatch: float | None = None

    @property
    def total(self) -> float | None:
        """File complete (else: the part in the inbox) -> products."""
        first = self.complete if self.complete is not None else self.inbox
        return _diff(first, self.finished)

    @property
    def cluster_wait(self) -> float | None:
        """The part in the inbox (else: the task submitted) -> the node code started: all the cluster side's
        waiting (verification, masters, throttles, the scheduler or a free worker)."""
        return _diff(self.inbox if self.inbox is not None else self.submitted, self.started)

    def stages(self) -> dict[str, float | None]:
        """Seconds per stage (:data:`STAGES`; None where a time is missing)."""
        out: dict[str, float | None] = {
            "pack": _diff(self.complete, self.packed), "transfer": _diff(self.packed, self.confirmed),
            "inbox": _diff(self.confirmed, self.verified), "hold": _diff(self.verified, self.submitted)}
        if self.claimed is not None:
            out.update(wait_worker=self.wait_worker, dispatch=self.dispatch, start=_diff(self.claimed, self.started))
        else:
            out["queue"] = _diff(self.submitted, self.started)
        for stage, steps in NODE_STAGES.items():
            out[stage] = sum(self.timings.get(s, 0.0) for s in steps) if self.timings else None
        total = self.total
        out["other"] = total - sum(v for v in out.values() if v is not None) if total is not None else None
        return {k: out[k] for k in STAGES if k in out}


def _diff(a: float | None, b: float | None) -> float | None:
    return b - a if a is not None and b is not None else None


def timeline(task: TaskRow, part: PartRow | None, exposure: ExposureRow | None = None,
             sent: SentPart | None = None) -> CcdTimeline:
    """One CCD's timeline from its task and part rows, and (if known) the journal's exposure and sent part.

    The stored result counts only when it is this attempt's: a done task's always is; a task queued or
    running again (or lost) may still hold an earlier attempt's, which started before this one was submitted.
    """
    r = task.result if _this_attempts(task) else None
    worker = r.worker if r else None
    return CcdTimeline(
        part=task.part, ccd=task.ccd, expid=task.expid, kind=task.kind, state=task.state, attempt=task.attempt,
        complete=exposure.t_complete if exposure else None, packed=sent.t_packed if sent else None,
        confirmed=sent.t_confirmed if sent else None, inbox=part.t_inbox if part else None,
        verified=part.t_verified if part else None, submitted=task.t_submitted,
        claimed=worker.claimed if worker else None,
        started=r.started if r else None, finished=r.finished if r else None,
        timings=dict(r.timings) if r else {}, job_id=task.job_id, worker=worker.name if worker else None,
        preload=worker.preload_seconds if worker else None, host=r.host if r else None)


def _this_attempts(task: TaskRow) -> bool:
    r = task.result
    if r is None or task.state == TaskState.DONE:
        return r is not None
    return r.started is not None and task.t_submitted is not None and r.started >= task.t_submitted


def split_worker_queue(timelines: Iterable[CcdTimeline]) -> None:
    """Worker mode: set ``wait_worker`` and ``dispatch`` of each timeline a warm worker claimed. Per worker
    in claim order, a worker is free from the end of its previous CCD; waiting is submitted -> min(claimed,
    free), dispatch is free (or submitted, if later) -> claimed. Calibration frames count: they keep workers busy."""
    by_worker: dict[str, list[CcdTimeline]] = defaultdict(list)
    for t in timelines:
        if t.worker and t.claimed is not None and t.submitted is not None and t.finished is not None:
            by_worker[t.worker].append(t)
    for mine in by_worker.values():
        mine.sort(key=lambda t: t.claimed)
        free = None
        for t in mine:
            free_from = max(t.submitted, free) if free else t.submitted
            t.wait_worker = max(0.0, min(t.claimed, free_from) - t.submitted)
            t.dispatch = t.claimed - free_from
            free = t.finished


def journal_rows(journal: Journal | None) -> tuple[dict[str, ExposureRow], dict[tuple[str, int], SentPart]]:
    """The telescope's side of every exposure and sent part, by expid and (expid, k); empty without a journal."""
    if journal is None:
        return {}, {}
    return {e.expid: e for e in journal.exposures()}, {(s.expid, s.k): s for s in journal.parts()}


def timelines(tasks: Iterable[TaskRow], parts: Mapping[str, PartRow], exposures: Mapping[str, ExposureRow],
              sent: Mapping[tuple[str, int], SentPart]) -> list[CcdTimeline]:
    """The tasks as timelines, from rows already read (``parts`` by stem; :func:`journal_rows`); worker queues
    are split."""
    out = []
    for task in tasks:
        part = parts.get(task.part)
        out.append(timeline(task, part, exposures.get(task.expid), sent.get((task.expid, part.k)) if part else None))
    split_worker_queue(out)
    return out


def ccd_timelines(db: StateDB, journal: Journal | None = None, *, night: str | None = None) -> list[CcdTimeline]:
    """Every CCD task (of ``night``) as a timeline; ``journal`` (the telescope's push journal, when it is on
    this machine) adds the telescope-side times."""
    return timelines(db.tasks(night=night), {p.stem: p for p in db.parts(night=night)}, *journal_rows(journal))


__all__ = ["NODE_STAGES", "STAGES", "CcdTimeline", "ccd_timelines", "journal_rows", "split_worker_queue", "timeline",
           "timelines"]
