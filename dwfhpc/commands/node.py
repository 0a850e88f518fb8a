"""``dwfhpc node run SPEC [--index I]``: the array-task entry point (submitit, templates, manual sbatch)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node", help="what runs on a compute node (one CCD per array task)")
    s = p.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    r = s.add_parser("run", help="run one task of a task spec; the result is also written beside the spec "
                                 "as <spec stem>.result-<index>.json",
                     description="Stage one CCD to node-local scratch, calibrate it, copy back its products.")
    r.add_argument("spec", type=Path, help="task spec JSON on the shared file system")
    r.add_argument("--index", type=int, default=None,
                   help="task index (default: $SLURM_ARRAY_TASK_ID, $PBS_ARRAY_INDEX or $PBS_ARRAYID)")
    r.set_defaults(func=run)
    w = s.add_parser("worker", help="a warm worker: run CCD after CCD from a work queue (dwfhpc ingest --workers)",
                     description="Claim tickets from the shared-FS work queue and run each as `node run` would, "
                                 "with the calibrations copied once into node-local scratch.")
    w.add_argument("queue", type=Path, help="the work queue folder (<jobs_dir>/workers)")
    w.add_argument("--time-minutes", type=float, default=None, help="this task's walltime")
    # the settings below default to QUEUE/settings.json (written by ingest), else to the config's defaults
    w.add_argument("--stop-seconds", type=float, default=None,
                   help="take no new CCD this long before the walltime ends (default: QUEUE/settings.json's "
                        "stop_minutes, else 180)")
    w.add_argument("--max-idle", type=float, default=None,
                   help="exit after this many seconds without work (default: QUEUE/settings.json's, else never)")
    w.add_argument("--scratch-var", action="append", default=None, dest="scratch_vars", metavar="VAR",
                   help="environment variable naming node-local scratch, first set wins (repeat; the site's "
                        "node.scratch_vars; default: QUEUE/settings.json's, else the config's)")
    w.add_argument("--scratch-fallback", default=None,
                   help="scratch when none is set (node.scratch_fallback; default: QUEUE/settings.json's, else "
                        "the config's)")
    w.set_defaults(func=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    from ..workers.worker import worker_main

    summary = worker_main(str(args.queue), args.time_minutes, args.stop_seconds, args.max_idle, args.scratch_vars,
                          args.scratch_fallback)
    print(json.dumps(summary), flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    from ..node import run_task  # not for `dwfhpc node --help`

    result = run_task(args.spec, args.index, write=True)
    summary = {k: result.get(k) for k in ("status", "expid", "ccd", "index", "error", "error_kind", "interrupted", "timings",
                                          "bytes_written")}
    print(json.dumps(summary, default=str), flush=True)
    if result["status"] != "ok":
        print(f"dwfhpc node: error: {result['error']}", file=sys.stderr)
        return 1
    return 0
