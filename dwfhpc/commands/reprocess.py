"""``dwfhpc reprocess LIST | --failed | --fallback-masters | --night N [--exposure E]``: run CCDs again as a new
attempt."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from ..states import TaskState


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reprocess", help="run parts or CCDs again as a new attempt (a list of tarballs, the failed ones, a night)",
        description="Queue CCD tasks again (attempt + 1) and, when no `dwfhpc ingest` is running on the state DB, "
                    "submit them through the site's executor and wait for them. A running ingest submits them itself.")
    p.add_argument("list", type=Path, nargs="?", default=None, metavar="LIST",
                   help="text file of part tarballs, one per line ('#' comments; the manifest beside each)")
    p.add_argument("--failed", action="store_true", help="every failed or lost task (of --night / --exposure if given)")
    p.add_argument("--fallback-masters", action="store_true",
                   help="the science CCDs calibrated with an earlier night's masters (of --night / --exposure if "
                        "given), once tonight's masters exist: they run again with tonight's")
    p.add_argument("--night", default=None, help="every task of this night (YYYY-MM-DD)")
    p.add_argument("--exposure", default=None, help="every task of this exposure (expid or exposure number)")
    p.add_argument("--config", default="local", help="site config name or file (default: local)")
    p.add_argument("--workdir", default=None, help="replace the config's workdir")
    p.add_argument("--submit", action=argparse.BooleanOptionalAction, default=True,
                   help="submit now when no ingest is running (default); --no-submit only queues them")
    p.add_argument("--no-wait", action="store_true",
                   help="submit and return without waiting (the next `dwfhpc ingest` collects them)")
    p.add_argument("--json", action="store_true", help="the outcome as JSON (progress goes to stderr)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_site
    from ..ops.reprocess import reprocess

    site = load_site(args.config, workdir=args.workdir)
    out = sys.stderr if args.json else sys.stdout
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = reprocess(site, list_path=args.list, failed=args.failed, night=args.night, exposure=args.exposure,
                           fallback_masters=args.fallback_masters, submit=args.submit, wait=not args.no_wait, stop=stop,
                           progress=lambda line: print(line, file=out, flush=True))
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    code = 1 if result.waited and (result.tasks.get(TaskState.FAILED) or result.tasks.get(TaskState.LOST)) else 0
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
        return code
    for path in result.delivered:
        print(f"delivered into the inbox: {path}")
    for stem in result.restored:
        print(f"parts-store copy restored: {stem}")
    by_part: dict[str, list[str]] = {}
    for r in sorted(result.requeued, key=lambda r: (r["part"], r["ccd"])):  # CCDs in order, whenever each failed
        by_part.setdefault(r["part"], []).append(f"{r['ccd']} (attempt {r['attempt']}, was {r['was']})")
    for part, ccds in by_part.items():
        print(f"queued again: {part} CCD {', '.join(ccds)}")
    for s in result.skipped:
        print(f"left alone: {s['part']} CCD {s['ccd']}: {s['reason']}")
    if not result.requeued and not result.delivered and not result.skipped:
        print("nothing to reprocess")
        return 0
    if result.ingest_running:
        print("an ingest is running on this state DB: it will submit them at its next poll")
    elif not args.submit:
        print("queued, not submitted (--no-submit): `dwfhpc ingest` or `dwfhpc reprocess` without it submits them")
    elif result.submitted and not result.waited:
        print("submitted; the next `dwfhpc ingest` collects them")
    print("tasks: " + (", ".join(f"{k} {v}" for k, v in result.tasks.items()) or "none yet"))
    return code
