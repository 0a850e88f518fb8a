"""``dwfhpc jobs``: our queued, running and held tasks by state."""

from __future__ import annotations

import argparse
import json

from ..ops.jobs import JOB_PREFIX, by_state, queued_tasks
from ._common import add_site_arguments, site_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="our queued/running/held array tasks by state (one squeue or qstat call)")
    add_site_arguments(p)  # the site's scheduler: PBS when ingest.executor is pbs, else Slurm
    p.add_argument("--prefix", default=JOB_PREFIX, help=f"job-name prefix (default {JOB_PREFIX!r})")
    p.add_argument("--list", action="store_true", help="one line per task")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    tasks = queued_tasks(args.prefix, site=site_from(args))
    counts = by_state(tasks)
    if args.json:
        print(json.dumps({"counts": counts, "tasks": [{"job_id": t.job_id, "name": t.name, "state": t.display_state, "reason": t.reason}
                                                   for t in tasks]}))
        return 0
    if args.list:
        for t in tasks:
            print(f"{t.job_id:14s} {t.name:32s} {t.display_state:10s} {t.reason}")
    print(", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "no dwfhpc tasks in the queue")
    return 0
