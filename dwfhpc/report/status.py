"""The night's figures both ``dwfhpc status`` (:mod:`dwfhpc.ingest.status`) and the night report show: p50/p95
spreads of done tasks, how CCDs ran (arrays or warm workers), nodes excluded for repeated resource failures.
Read from the state DB and the workers' heartbeats only, so the report needs nothing of the ingest."""

from __future__ import annotations

import time

from ..config import IngestSettings
from ..statedb import StateDB
from ..states import TaskState
from . import percentile


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
    from ..layout import JobFiles
    from ..workers.status import worker_status  # lazy: the workers' modules only when workers ran

    subs = db.submissions()
    workers = subs[-1].executor.endswith("+workers") if subs else bool(site.ingest.workers)
    if not workers:
        return {"mode": "arrays", "workers": None}
    return {"mode": "workers", "workers": {"wanted": site.ingest.workers or None,
                                           **worker_status(JobFiles.for_site(site).worker_queue)}}


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
