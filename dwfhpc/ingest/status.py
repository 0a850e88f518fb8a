"""What ``dwfhpc status`` shows: science and calibration CCDs, parts and tasks by state, latency part
arrival -> products, failures. The CCD counts are :func:`dwfhpc.report.counts.ccd_counts`, the same
the demo's summary and the night report use."""

from __future__ import annotations

from ..report import percentile
from ..report.counts import ccd_counts, counts_dict
from ..state import StateDB


def summary(db: StateDB, night: str | None = None) -> dict:
    parts = [p for p in db.parts(night=night)]
    tasks = db.tasks(night=night)
    exposures: dict[str, dict[str, int]] = {}
    for t in tasks:
        e = exposures.setdefault(t.expid, {})
        e[t.state] = e.get(t.state, 0) + 1
    exp_states: dict[str, int] = {}
    for counts in exposures.values():
        total = sum(counts.values())
        state = ("done" if counts.get("done", 0) == total else
                 "failed" if sum(counts.get(s, 0) for s in ("done", "failed", "lost")) == total else "in progress")
        exp_states[state] = exp_states.get(state, 0) + 1
    latency = []
    for p in parts:
        mine = [t for t in tasks if t.part == p.stem]
        if mine and all(t.state == "done" for t in mine) and p.t_inbox:
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
                     for t in tasks if t.state in ("failed", "lost")]
                    + [{"part": p.stem, "ccd": None, "state": "quarantined", "attempts": 0, "reason": p.reason}
                       for p in parts if p.state == "quarantined"],
        "retried": sum(t.attempt > 1 for t in tasks),
    }
