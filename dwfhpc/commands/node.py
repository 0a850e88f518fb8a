"""``dwfhpc node run SPEC [--index I]``: the array-task entry point (submitit, templates, manual sbatch)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..node import run_task


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node", help="commands that run on compute nodes")
    s = p.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    r = s.add_parser("run", help="run one task of a task spec (index from --index or the array task id)")
    r.add_argument("spec", type=Path)
    r.add_argument("--index", type=int, default=None)
    r.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = run_task(args.spec, args.index)
    print(json.dumps({k: result.get(k) for k in ("status", "expid", "ccd", "error", "timings", "bytes_written")},
                     default=str))
    return 0 if result["status"] == "ok" else 1
