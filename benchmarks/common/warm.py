"""Worker mode (``ingest --workers N``): per-CCD figures derived from the node results.

In worker mode there is no Slurm StartTime per CCD: a warm worker claims the CCD's ticket (the result's
``worker.claimed``) and runs it. The queue (submitted -> claimed) splits into waiting for a free worker
(all N busy) and dispatch (a worker was free: its poll of the queue, the claim).
"""

from __future__ import annotations


def split_worker_queue(recs: list[dict]) -> None:
    """Set ``wait_worker`` and ``dispatch`` of each record (keys ``worker``, ``claimed``, ``t_submitted``,
    ``finished``): per worker in claim order, a worker is free from the end of its previous CCD; waiting is
    submitted -> min(claimed, free), dispatch is free (or submitted, if later) -> claimed."""
    by_worker: dict[str, list[dict]] = {}
    for rec in recs:
        by_worker.setdefault(rec["worker"], []).append(rec)
    for mine in by_worker.values():
        mine.sort(key=lambda x: x["claimed"])
        prev_free = None
        for rec in mine:
            free_from = max(rec["t_submitted"], prev_free) if prev_free else rec["t_submitted"]
            rec["wait_worker"] = max(0.0, min(rec["claimed"], free_from) - rec["t_submitted"])
            rec["dispatch"] = rec["claimed"] - free_from
            prev_free = rec["finished"]
