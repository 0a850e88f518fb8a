"""What ``dwfhpc status`` shows: science and calibration CCDs, parts and tasks by state, latency part
arrival -> products, failures, nodes excluded for repeated resource failures. The CCD counts are
:func:`dwfhpc.report.counts.ccd_counts`, the same the demo's summary and the night report use."""

from __future__ import annotations

from ..report import percentile
from ..report.counts import ccd_counts, counts_dict
from ..report.status import excluded_nodes, mode, spread_of_done
from ..statedb import StateDB
from ..states import PartState, TaskState, exposure_state_from_tasks


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
