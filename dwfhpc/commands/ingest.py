"""``dwfhpc ingest --array``: the cluster side, all night (or ``--once`` / ``--drain``, or ``--emit-scripts``)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import get_args

from ..config import Executor, load_site
from ..errors import DwfError
from ..states import TaskState


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="verify delivered parts and calibrate them as job arrays (one task per CCD)")
    p.add_argument("--config", default="local", help="site config name or file (default: local)")
    p.add_argument("--workdir", default=None, help="replace the config's workdir")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--array", action="store_true",
                     help="one job array per part, one task per CCD (reprocessing; sites that forbid long jobs); "
                          "without --array or --workers: the config's ingest.workers (0: arrays)")
    how.add_argument("--workers", type=int, default=None, metavar="N",
                     help="warm workers: N long-lived tasks run CCD after CCD, as on an observing night "
                          "(config ingest.workers)")
    p.add_argument("--executor", choices=get_args(Executor), default=None, help="config ingest.executor")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--max-jobs", type=int, default=None, help="at most N of our tasks queued + running")
    g.add_argument("--rate", type=float, default=None, help="at most R new parts per minute")
    p.add_argument("--poll", type=float, default=None, help="seconds between polls (config ingest.poll_seconds)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one poll (verify, submit, collect), then exit")
    mode.add_argument("--drain", action="store_true", help="run until nothing is waiting, queued or running")
    mode.add_argument("--emit-scripts", type=Path, metavar="DIR", default=None,
                      help="write specs and sbatch/PBS scripts for the parts in the inbox instead of submitting")
    p.add_argument("--no-report", action="store_true", help="do not regenerate the night report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ingest import Ingest, IngestOptions
    from ..ingest.status import summary

    bad_max_jobs = args.max_jobs is not None and args.max_jobs < 1  # said after --emit-scripts, which has no use for it
    given = {"executor": args.executor, "max_jobs": None if bad_max_jobs else args.max_jobs, "rate": args.rate,
             "poll_seconds": args.poll}
    overrides = {k: v for k, v in given.items() if v}  # 0 / None: the config's
    if args.workers is not None or args.array:
        overrides["workers"] = 0 if args.array else args.workers
    site = load_site(args.config, workdir=args.workdir, overrides={"ingest": overrides} if overrides else None)
    if args.emit_scripts:
        from ..ingest.emit import emit_scripts
        from ..scheduler import site_kind

        written = emit_scripts(site, args.emit_scripts, kind=site_kind(site))
        for path in written:
            print(path)
        print(f"{len(written)} script(s) written to {args.emit_scripts}")
        return 0
    if bad_max_jobs:
        raise DwfError("--max-jobs must be at least 1")
    ingest = Ingest(site, IngestOptions(report=not args.no_report))
    previous = {s: signal.signal(s, lambda *_: ingest.request_stop()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        last = ingest.run(once=args.once, drain=args.drain)
        failed = ingest.db.count_tasks(TaskState.FAILED, TaskState.LOST)
        totals = summary(ingest.db)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        ingest.close()
    if args.once or args.drain:
        print("this poll: " + ", ".join(f"{k} {v}" for k, v in last.items()))
        for what in ("parts", "tasks"):
            print(f"{what}: " + (", ".join(f"{k} {v}" for k, v in totals[what].items()) or "none"))
    return 1 if (args.drain and failed) else 0
