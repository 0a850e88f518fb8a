"""What ``dwfhpc status`` shows: science and calibration CCDs, parts and tasks by state, latency part
arrival -> products, failures, nodes excluded for repeated resource failures. The CCD counts are
:func:`dwfhpc.report.counts.ccd_counts`, the same the demo's summary and the night report use."""

from __future__ import annotations

import time

from ..config import IngestSettings
from ..report import percentile
from ..report.counts import ccd_counts, counts_dict
from ..state import StateDB
from ..states import PartState, TaskState, exposure_state_from_tasks


def _spread(values: list[float]) -> dict:
    return {"n": len(values), "p50": percentile(values, 50) if values else None,
            "p95": percentile(values, 95) if values else None}


def spread_of_done(tasks, start: str, end: str) -> dict:
    """p50/p95 over done tasks of ``end - start`` (two TaskRow time fields)."""
    return _spread([getattr(t, end) - getattr(t, start) for t in tasks
                    if t.state == TaskState.DONE and getattr(t, end) and getattr(t, start)])


def mode(site, db: StateDB) -> dict:
    """How CCDs ran (per-part arrays or warm workers, from the executor of the latest submission) and,
    for workers, alive / busy / idle from their heartbeats."""
    from .executors import worker_queue_root
    from .executors.workers import worker_status

    subs = db.submissions()
    workers = subs[-1].executor.endswith("+workers") if subs else bool(site.ingest.workers)
    if not workers:
        return {"mode": "arrays", "workers": None}
    return {"mode": "workers", "workers": {"wanted": site.ingest.workers or None,
                                           **worker_status(worker_queue_root(site))}}


def excluded_nodes(db: StateDB, site=None, now: float | None = None) -> list[dict]:
    """Nodes left out of new submissions now (``ingest.node_failures_exclude`` resource failures within
    ``ingest.node_failure_window_minutes``; the defaults without ``site``): node, failures, until (Unix
    seconds), reason (one line: how many, until when, the last failure), applied (whether the executor of the
    latest submission can exclude nodes: Slurm only)."""
    ing = site.ingest if site is not None else IngestSettings()
    subs = db.submissions()
    executor = subs[-1].executor if subs else (ing.executor + ("+workers" if ing.workers else ""))
    applied = executor.split("+")[0] == "slurm"
    window = ing.node_failure_window_minutes
    return [{"node": e.node, "failures": e.failures, "first": e.first, "last": e.last, "until": e.until,
             "part": e.part, "ccd": e.ccd, "applied": applied,
             "reason": e.describe(ing.node_failures_exclude, window)
                       + ("" if applied else f" (not applied: the {executor} executor cannot exclude nodes; Slurm only)")}
            for e in db.node_exclusions(now or time.time(), ing.node_failures_exclude, window * 60.0)]


def masters_waiting(db: StateDB, site, night: str | None = None) -> list[dict]:
    """Nights whose queued science CCDs have no masters to be calibrated with (none tonight, none from an earlier
    night within ``calibration.masters_max_age_days``), so they wait: night, ccds (how many), why."""
    from .masters import UsableMasters  # the calibration stack: only when there is science queued

    queued = [t for t in db.tasks(TaskState.QUEUED, night=night) if t.kind == "science"]
    if not queued:
        return []
    age = site.calibration.masters_max_age_days
    usable = UsableMasters(db, site.path(site.calibration.masters), age)
    waiting: dict[str, int] = {}
    for t in queued:
        if not usable(t):
            waiting[t.night] = waiting.get(t.night, 0) + 1
    cals = db.calibration_nights() if waiting else {}
    out = []
    for n, count in sorted(waiting.items()):
        built = db.rows("SELECT masters, reason FROM nights WHERE night=?", (n,))
        c = cals.get(n)
        if built and not built[0]["masters"] and built[0]["reason"] and not (c and c["pending"]):
            tonight = f"masters could not be built: {built[0]['reason']}"
        elif built and built[0]["masters"] and not (c and c["pending"]):
            tonight = "tonight's masters lack these CCDs or filters"
        elif c is None:
            tonight = "no calibration frames tonight"
        else:
            tonight = "no masters tonight yet"
        earlier = f"none within {age} days" if age else "no fallback (calibration.masters_max_age_days is 0)"
        out.append({"night": n, "ccds": count, "reason": f"{tonight}, {earlier}"})
    return out


def summary(db: StateDB, night: str | None = None, site=None) -> dict:
    """Everything ``dwfhpc status`` shows; with ``site``, also the mode, the workers' state and the science
    waiting for masters."""
    parts = [p for p in db.parts(night=night)]
    tasks = db.tasks(night=night)
    exposures: dict[str, list[TaskState]] = {}
    for t in tasks:
        exposures.setdefault(t.expid, []).append(t.state)
    exp_states: dict[str, int] = {}
    for states in exposures.values():
        state = exposure_state_from_tasks(states)
        exp_states[state] = exp_states.get(state, 0) + 1
    latency = []
    for p in parts:
        mine = [t for t in tasks if t.part == p.stem]
        if mine and all(t.state == TaskState.DONE for t in mine) and p.t_inbox:
            latency.append(max(t.t_finished for t in mine) - p.t_inbox)
    count = lambda items: {s: sum(i.state == s for i in items) for s in sorted({i.state for i in items})}  # noqa: E731
    return {
        "night": night,
        "ccds": counts_dict(ccd_counts(db, night)),
        "exposures": exp_states,
        "parts": count(parts),
        "tasks": count(tasks),
        "latency_part_to_products": {"n": len(latency), "p50": percentile(latency, 50) if latency else None,
                                     "p95": percentile(latency, 95) if latency else None},
        "failures": [{"part": t.part, "ccd": t.ccd, "state": t.state, "attempts": t.attempt, "reason": t.reason}
                     for t in tasks if t.state in (TaskState.FAILED, TaskState.LOST)]
                    + [{"part": p.stem, "ccd": None, "state": PartState.QUARANTINED, "attempts": 0, "reason": p.reason}
                       for p in parts if p.state == PartState.QUARANTINED],
        "retried": sum(t.attempt > 1 for t in tasks),
        "waiting": [{"part": t.part, "ccd": t.ccd, "job_id": t.job_id, "waiting": t.waiting}
                    for t in tasks if t.waiting and t.state == TaskState.SUBMITTED],
        # per CCD: submitted (array submitted, or ticket handed to the workers) -> running -> products
        "queue_seconds": spread_of_done(tasks, "t_submitted", "t_started"),
        "run_seconds": spread_of_done(tasks, "t_started", "t_finished"),
        "resubmission_stops": db.resubmission_stops(night),
        "resource_retried": sum(t.resource_retries > 0 for t in tasks),
        "excluded_nodes": excluded_nodes(db, site),
        **({**mode(site, db), "masters_waiting": masters_waiting(db, site, night)} if site is not None else {}),
    }
