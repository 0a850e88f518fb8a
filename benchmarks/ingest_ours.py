"""Ours in ``benchmarks/ingest.py``: :class:`dwfhpc.ingest.Ingest` with the Slurm executor, in a thread.

What is measured comes through the public entry points: the inbox scans and scheduler polls from
``Ingest.run``'s observer (:class:`dwfhpc.ingest.Step`), each part's ``submit`` call from a timing
wrapper around the executor (``Ingest(site, opts, executor=...)``), the parts' first submission from
the state DB's :meth:`~dwfhpc.statedb.StateDB.submissions` (a second, read-only use of the DB). The one
patch left is a timer around :func:`dwfhpc.ingest.inbox.verify_part`, which happens inside a scan
(``verify_part`` of one part, as the inbox ran it).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from ingest_setup import OURS_PREFIX, cancel, phases, read_calls

from dwfhpc.config import load_site
from dwfhpc.ingest import Ingest, IngestOptions, Step, make_executor
from dwfhpc.ingest import inbox as inbox_module
from dwfhpc.statedb import StateDB


class TimedExecutor:
    """The executor, with each part's first ``submit`` timed (start, end): the submitit + ``sbatch`` call."""

    def __init__(self, inner):
        self.inner = inner
        self.submits: dict[str, tuple[float, float]] = {}

    def __getattr__(self, name):  # everything else is the executor's own
        return getattr(self.inner, name)

    def submit(self, request):
        t0 = time.time()
        out = self.inner.submit(request)
        self.submits.setdefault(request.part, (t0, time.time()))
        return out


def ours_site(work: Path, args):
    """The site ours runs with: the Slurm executor, the benchmark's polls, tasks that only sleep."""
    return load_site("local", workdir=work, overrides={
        "ingest": {"executor": "slurm", "poll_seconds": args.poll, "inbox_poll_seconds": args.inbox_poll,
                   "verify_threads": args.verify_threads, "max_jobs": None, "rate": None,
                   "auto_masters": False, "report_every_seconds": 86400, "arrival_grace_seconds": 120,
                   "lost_after_seconds": 3600, "max_attempts": 1},
        "node": {"require_masters": False},
        "scheduler": {"array_parallelism": args.array_parallelism, "setup": [f"sleep {args.task_sleep}"],
                      "time_minutes": max(15, args.task_sleep // 60 + 5), "mem_gb": 1, "cpus_per_task": 1}})


def part_rows(appear: dict[str, float], subs: dict[str, float], steps: list[Step],
              verifies: dict[str, tuple[float, float]], submits: dict[str, tuple[float, float]]) -> list[dict]:
    """Per part: appear -> submitted, and where the time went."""
    scan_start = {stem: s.started for s in steps for stem in s.accepted}
    rows = []
    for stem, ta in appear.items():
        ts = subs.get(stem)
        if ts is None:
            continue
        t_scan = scan_start.get(stem)
        wait = max(0.0, t_scan - ta) if t_scan is not None else float("nan")
        v0, v1 = verifies.get(stem, (float("nan"), float("nan")))
        scanned = v1 - t_scan if t_scan is not None else float("nan")  # scan start -> this part verified
        rows.append({"part": stem, "t_appear": ta, "latency": ts - ta, "wait": wait, "scan": scanned,
                     "rest": ts - v1, "verify": v1 - v0,
                     "sbatch": (submits[stem][1] - submits[stem][0]) if stem in submits else float("nan")})
    return rows


def first_submissions(db: StateDB) -> dict[str, float]:
    """Part -> when its first array was submitted, as the state DB records it."""
    out: dict[str, float] = {}
    for s in db.submissions():
        out[s.part] = min(s.t_submitted, out.get(s.part, s.t_submitted))
    return out


def run_ours(root: Path, exposures, args, plan: dict) -> dict:
    calls_file = root / "calls-ours.txt"
    os.environ["DWF_BENCH_CALLS"] = str(calls_file)
    site = ours_site(root / "ours", args)
    inbox = site.path(site.ingest.inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    t_ctor = time.time()
    executor = TimedExecutor(make_executor(site))  # start-up: scontrol ping, MaxArraySize
    ingest = Ingest(site, IngestOptions(report=False), executor=executor)
    t_ctor_end = time.time()

    steps: list[Step] = []  # every poll of the loop: its scan start, accepted parts, scheduler poll times
    verifies: dict[str, tuple[float, float]] = {}  # part -> start, end of its own verify_part, as the inbox ran it
    orig_verify = inbox_module.verify_part

    def verify(tar, manifest_path=None, **kw):
        t0 = time.time()
        try:
            return orig_verify(tar, manifest_path, **kw)
        finally:
            verifies[Path(tar).name[: -len(".tar")]] = (t0, time.time())

    inbox_module.verify_part = verify
    errors: list[BaseException] = []

    def loop():
        try:
            ingest.run(observer=steps.append)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    reader = StateDB(ingest.state_path)  # its own connection: reading never waits for the ingest thread's lock
    appear: dict[str, float] = {}

    def deliver(parts):
        for tar, man in parts:
            os.replace(tar, inbox / tar.name)
            os.replace(man, inbox / man.name)  # manifest last: from now the part is complete in the inbox
            appear[man.name[: -len(".manifest.json")]] = time.time()

    def set_poll(seconds: float) -> None:
        ingest.poll_seconds = seconds

    th = threading.Thread(target=loop, name="ingest", daemon=True)
    th.start()
    try:
        out = phases(args, plan, exposures, deliver, lambda: first_submissions(reader), appear, set_poll,
                     OURS_PREFIX, errors)
    finally:
        ingest.request_stop()
        th.join(timeout=300)
        subs = first_submissions(ingest.db)
        n_subs = len(ingest.db.submissions())
        reader.close()
        ingest.close()
        inbox_module.verify_part = orig_verify
        cancel(OURS_PREFIX)
    if errors:
        raise errors[0]
    polls = [s.collected for s in steps if s.collected is not None]
    out.update(rows=part_rows(appear, subs, steps, verifies, executor.submits), calls=read_calls(calls_file),
               n_submissions=n_subs, t_ctor=(t_ctor, t_ctor_end),
               collector_seconds=[b - a for a, b in polls], poll_starts=[a for a, _ in polls])
    return out
