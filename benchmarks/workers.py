"""Worker-mode benchmark on a real private Slurm: per-CCD latency, per-part arrays vs ``--workers N``.

In ONE run, on the same cluster, with the same delivery schedule and the same parts:

* **arrays**: :class:`dwfhpc.ingest.Ingest` with the Slurm executor, one submitit job array per part
  (one task per CCD: a fresh Python process per CCD, calibrations read from the shared masters);
* **workers**: the same with ``ingest.workers = N``: N long-lived tasks (one submitit array of
  ``dwfhpc.workers.worker.worker_main``) claim CCD tickets from the shared-FS queue and run the same
  node code with the masters copied once into node-local scratch.

The night's masters are built beforehand (one bias and one dome-flat exposure through a local
ingest) and both modes read them (``calibration.masters``, ``auto_masters: false``). Each mode first
gets a warm-up part (excluded from the steady-state figures and reported apart: in worker mode it
also pays for starting the workers), then ``--parts`` science parts of ``--ccds`` CCDs, one every
``--cadence`` s (same offsets in both modes), hard-linked into the inbox (tarball, then manifest).

Per CCD, from the state DB (``parts.t_verified``, ``tasks.t_submitted``, the result's ``started``,
``finished``, ``timings``, ``worker``) and Slurm's job-completion log (``JobCompLoc``, StartTime of
each array task, 1 s resolution): latency = part verified -> products (``finished``), split into

* hold + submit: verified -> ``t_submitted`` (spec, ``sbatch`` / tickets written),
* queue: submitted -> the task's Slurm StartTime (arrays) / -> the ticket claimed (workers); in worker
  mode further split into waiting for a free worker (all N busy) and dispatch (a worker was free),
* start-up: StartTime -> node code ``started`` (arrays: launch, interpreter, imports, unpickle) /
  claimed -> ``started`` (workers: spec read + ``preload_seconds``, the node-local copy of masters),
* stage (stage + verify + decompress), calibrate (calibrate + QA), copy back, other (the rest of
  ``started`` -> ``finished``).

Also the start-up cost of a fresh Python measured alone (``python -c "import dwfhpc.node.run,
astropy.io.fits, numpy, fitsio, sep"``, several repeats), and the machine's load average.

Writes ``benchmarks/results/workers.md`` (and ``workers.json``). Usage::

    PYTHONPATH=$PWD python benchmarks/workers.py [--quick] [--parts 8] [--ccds 6] [--cadence 25] [--workers 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# benchmarks/ is first on sys.path when this runs as a script:
import ingest as bench_ingest  # noqa: E402  (benchmarks/ingest.py: ensure_slurm, real, wait_until)
from common.slurm import jobcomp_starts, squeue  # noqa: E402

import fitsio  # noqa: E402
import submitit  # noqa: E402
from astropy.io import fits  # noqa: E402

from dwfhpc.atomic import sha256_file  # noqa: E402

from dwfhpc.config import load_site  # noqa: E402
from dwfhpc.ingest import Ingest, IngestOptions  # noqa: E402
from dwfhpc.ingest.executors import worker_queue_root  # noqa: E402
from dwfhpc.instruments import instrument_for  # noqa: E402
from dwfhpc.layout import manifest_name, part_tar_name  # noqa: E402
from dwfhpc.parts import pack_exposure, read_manifest  # noqa: E402
from dwfhpc.simulate import simulate_decam_exposure  # noqa: E402
from dwfhpc.states import TASK_FINAL  # noqa: E402
from dwfhpc.workers import WorkQueue  # noqa: E402

BASE_EXPNUM = 97300000
from workers_report import IMPORTS, STAGE_NAMES, STAGES, analyse, fmt, report  # noqa: E402,F401

def say(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)



# --------------------------------------------------------------------------- Slurm
def squeue_rows() -> list[tuple[str, str, str]]:
    """(job id, array job id, state) of everything in the queue (anyone's)."""
    rows = squeue(fields=("id", "array", "state"), exe=bench_ingest.real("squeue"), expand_arrays=True)
    return [(r["id"], r["array"], r["state"]) for r in rows]


def cancel_ours(array_ids: set[str], timeout: float = 120.0) -> None:
    """scancel the arrays this run submitted (by id, never by name: others share this Slurm)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = sorted({a for _, a, _ in squeue_rows() if a in array_ids})
        if not left:
            return
        subprocess.run([bench_ingest.real("scancel"), *left], capture_output=True)
        time.sleep(1.0)
    say(f"warning: arrays {left} still in the queue")


# --------------------------------------------------------------------------- background samples
class Sampler(threading.Thread):
    """1-min load average and our / others' running Slurm tasks, every ``every`` s."""

    def __init__(self, ours: set[str], refresh, every: float = 3.0):
        super().__init__(daemon=True)
        self.ours, self.refresh, self.every = ours, refresh, every
        self.load: list[float] = []
        self.others_running: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.load.append(os.getloadavg()[0])
            try:
                self.refresh()  # our array ids as they are submitted
                rows = squeue_rows()
                self.others_running.append(sum(1 for _, a, s in rows if s == "RUNNING" and a not in self.ours))
            except Exception:  # noqa: BLE001 - a sample missed; the next one counts
                pass
            self.stop.wait(self.every)


# --------------------------------------------------------------------------- Python start-up alone
def python_startup(repeats: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO) + (os.pathsep + os.environ["PYTHONPATH"]
                                                    if os.environ.get("PYTHONPATH") else "")}
    out = {}
    for label, argv in (("bare", [sys.executable, "-c", "pass"]),
                        ("imports", [sys.executable, "-c", IMPORTS]),
                        ("imports+submitit", [sys.executable, "-c", IMPORTS + ", submitit"])):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run(argv, env=env, check=True)
            times.append(time.perf_counter() - t)
        out[label] = times
    return out


# --------------------------------------------------------------------------- parts and masters
def prepare(root: Path, args) -> tuple[list[tuple[Path, Path]], Path, dict]:
    """Staged (tar, manifest) science parts (warm-up first) and the night's masters folder."""
    inst = instrument_for("decam")
    ccds = list(inst.good_ccds)[: args.ccds]
    t0 = time.perf_counter()
    raw, packed = root / "raw", root / "packed"
    frames = {"bias": (BASE_EXPNUM - 3, "zero"), "flat": (BASE_EXPNUM - 2, "dome flat"),
              "sci": (BASE_EXPNUM - 1, "object")}
    parts = {}
    for name, (expnum, obstype) in frames.items():
        f = simulate_decam_exposure(raw, expnum=expnum, obstype=obstype, ccds=ccds, seed=expnum % 11, jobs=args.jobs)
        parts[name] = pack_exposure(f, packed / name, codec="rice", parts=1, jobs=args.jobs)[0]
        f.unlink()
    t_sim = time.perf_counter() - t0

    # masters: the bias and the flat through a local ingest (files them, builds the night's masters)
    t0 = time.perf_counter()
    prep = root / "prep"
    site = load_site("local", workdir=prep, overrides={
        "ingest": {"executor": "local", "poll_seconds": 0.5, "auto_masters": True, "max_jobs": None,
                   "report_every_seconds": 86400, "lost_after_seconds": 30},
        "node": {"require_masters": False}, "scheduler": {"array_parallelism": 2}})
    inbox = site.path(site.ingest.inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    for name in ("bias", "flat"):
        shutil.copyfile(parts[name].tar, inbox / parts[name].tar.name)
        shutil.copyfile(parts[name].manifest, inbox / parts[name].manifest.name)
    ing = Ingest(site, IngestOptions(executor="local", report=False))
    try:
        ing.run(drain=True, timeout=900)
        nights = {t.night for t in ing.db.tasks()}
        bad = [(t.part, t.ccd, t.state, t.reason) for t in ing.db.tasks() if t.state != "done"]
        if bad or not all(ing.db.masters_built(n) for n in nights):
            raise SystemExit(f"masters not built: {bad}")
    finally:
        ing.close()
    masters = site.path(site.calibration.masters)
    t_masters = time.perf_counter() - t0

    # science: the template's compressed members under new exposure numbers
    t0 = time.perf_counter()
    members = root / "members"
    with tarfile.open(parts["sci"].tar) as tf:
        tf.extractall(members, filter="data")
    staging = root / "staging"
    staging.mkdir()
    staged = [clone_exposure(parts["sci"].manifest, members, staging, BASE_EXPNUM + i)
              for i in range(args.parts + 1)]
    shutil.rmtree(members)
    t_clone = time.perf_counter() - t0
    return staged, masters, {"t_sim": t_sim, "t_masters": t_masters, "t_clone": t_clone, "ccds": ccds,
                             "part_mb": staged[0][0].stat().st_size / 1e6, "nights": sorted(nights)}


def clone_exposure(template_manifest: Path, members: Path, out: Path, expnum: int) -> tuple[Path, Path]:
    """The template part under a new exposure number: its compressed members with ``EXPNUM`` rewritten
    in place (the node checks the member's header against the manifest), a new tarball and manifest
    (member sizes and checksums recomputed). Pixels and compression are the template's."""
    m = read_manifest(template_manifest)
    expid = f"DECam_{expnum:08d}"
    work = out / f".{expid}"
    work.mkdir()
    new_members = []
    tar_path = out / part_tar_name(expid, m.part, m.parts)
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for mem in m.members:
            name = mem.name.replace(m.expid, expid, 1)
            dst = work / name
            shutil.copyfile(members / mem.name, dst)
            with fitsio.FITS(str(dst), "rw") as f:
                for hdu in f:
                    if "EXPNUM" in hdu.read_header():
                        hdu.write_key("EXPNUM", expnum)
            ti = tar.gettarinfo(str(dst), arcname=name)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            ti.mode = 0o644
            with open(dst, "rb") as fh:
                tar.addfile(ti, fh)
            header = fits.Header.fromstring(mem.header)
            if "EXPNUM" in header:
                header["EXPNUM"] = expnum
            new_members.append(dataclasses.replace(mem, name=name, header=header.tostring(),
                                                   bytes=dst.stat().st_size, sha256=sha256_file(dst)))
    shutil.rmtree(work)
    clone = dataclasses.replace(m, expid=expid, expnum=expnum, tar_name=tar_path.name,
                                tar_bytes=tar_path.stat().st_size, tar_sha256=sha256_file(tar_path),
                                members=new_members, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return tar_path, clone.write(out / manifest_name(expid, m.part, m.parts))


def deliver(inbox: Path, tar: Path, manifest: Path) -> float:
    """Hard-link the part into the inbox, tarball first, manifest last (the same files for both modes)."""
    os.link(tar, inbox / tar.name)
    os.link(manifest, inbox / manifest.name)
    return time.time()


# --------------------------------------------------------------------------- one mode
def run_mode(mode: str, root: Path, staged, masters: Path, offsets: list[float], args) -> dict:
    work = root / mode
    workers = args.workers if mode == "workers" else 0
    site = load_site("local", workdir=work, overrides={
        "ingest": {"executor": "slurm", "poll_seconds": args.poll, "inbox_poll_seconds": 0.25, "max_jobs": None,
                   "rate": None, "auto_masters": False, "report_every_seconds": 86400,
                   "arrival_grace_seconds": 120, "lost_after_seconds": 60, "max_attempts": 2,
                   "workers": workers, "worker_time_minutes": 60, "worker_mem_gb": 1},
        "node": {"require_masters": True},
        "calibration": {"masters": str(masters)},
        "scheduler": {"array_parallelism": args.array_parallelism, "mem_gb": 1, "time_minutes": 15,
                      "cpus_per_task": 1}})
    inbox = site.path(site.ingest.inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    ingest = Ingest(site, IngestOptions(executor="slurm", report=False))
    ours: set[str] = set()  # array ids we submitted (per-part arrays and worker arrays)

    def note_ids() -> None:
        for s in ingest.db.submissions():
            if s.job_id:
                ours.add(str(s.job_id))
        for m in getattr(ingest.executor, "pool", []):
            ours.add(str(m.task_id).split("_")[0])

    errors: list[BaseException] = []

    def loop() -> None:
        try:
            ingest.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def wait_final(n: int, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            note_ids()
            tasks = ingest.db.tasks()
            if len(tasks) >= n and all(t.state in TASK_FINAL for t in tasks):
                return
            if errors:
                raise SystemExit(f"{mode}: ingest stopped: {errors[0]!r}")
            time.sleep(0.5)
        say(f"warning: {mode}: timed out waiting for {what}")

    sampler = Sampler(ours, note_ids)
    th = threading.Thread(target=loop, name=f"ingest-{mode}", daemon=True)
    appear: dict[str, float] = {}
    t_begin = time.time()
    sampler.start()
    th.start()
    try:
        tar, man = staged[0]
        appear[man.name] = deliver(inbox, tar, man)
        say(f"{mode}: warm-up part delivered")
        wait_final(args.ccds, 600, "the warm-up part")
        bad = [(t.ccd, t.state, t.reason) for t in ingest.db.tasks() if t.state != "done"]
        if bad:
            raise SystemExit(f"{mode}: the warm-up part failed: {bad[:2]}")
        t0 = time.monotonic()
        for i, off in enumerate(offsets):
            bench_ingest.wait_until(t0 + off)
            tar, man = staged[i + 1]
            appear[man.name] = deliver(inbox, tar, man)
            say(f"{mode}: part {i + 1}/{len(offsets)} delivered")
        wait_final(args.ccds * (len(offsets) + 1), 900, "all parts")
    finally:
        ingest.request_stop()
        th.join(timeout=300)
        note_ids()
        tasks = ingest.db.tasks()
        parts = {p.stem: p for p in ingest.db.parts()}
        n_subs = len(ingest.db.submissions())
        started_workers = getattr(ingest.executor, "started_workers", 0)
        t_close = time.time()
        ingest.close()  # worker mode: drains the workers
        t_closed = time.time()
        cancel_ours(ours)
        sampler.stop.set()
    beats = []
    if workers:
        beats = [vars(b) for b in WorkQueue(worker_queue_root(site)).beats()]
    rows = []
    for t in tasks:
        p = parts[t.part]
        rows.append({"part": t.part, "ccd": t.ccd, "state": str(t.state), "attempt": t.attempt, "job_id": t.job_id,
                     "t_inbox": p.t_inbox, "t_verified": p.t_verified, "t_submitted": t.t_submitted,
                     "result": t.result.to_dict() if t.result else None, "warmup": p.expnum == BASE_EXPNUM,
                     "log": (str(submitit.SlurmJob(folder=site.path(site.ingest.jobs_dir) / "%j",
                                                   job_id=t.job_id).paths.stdout)  # submitit logs to stdout
                             if not workers and t.job_id else None)})
    return {"mode": mode, "workers": workers, "rows": rows, "beats": beats, "ours": sorted(ours),
            "submissions": n_subs, "started_workers": started_workers, "t_begin": t_begin, "t_end": t_close,
            "close_seconds": t_closed - t_close, "load": sampler.load, "others_running": sampler.others_running,
            "appear": appear}


# --------------------------------------------------------------------------- analysis
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run (~3 min)")
    ap.add_argument("--parts", type=int, default=None, help="science parts per mode (default 8, quick 6)")
    ap.add_argument("--ccds", type=int, default=None, help="CCDs per part (default 6, quick 4)")
    ap.add_argument("--cadence", type=float, default=None, help="seconds between parts (default 25, quick 12)")
    ap.add_argument("--workers", type=int, default=4, help="N warm workers")
    ap.add_argument("--array-parallelism", type=int, default=4)
    ap.add_argument("--poll", type=float, default=1.0, help="ingest.poll_seconds (both modes)")
    ap.add_argument("--repeats", type=int, default=None, help="Python start-up repeats (default 10, quick 5)")
    ap.add_argument("--order", default="arrays,workers", help="which mode first")
    ap.add_argument("--jobs", type=int, default=2, help="processes for simulate/pack")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--slurm-conf", type=Path, default=None, help="use this running cluster")
    ap.add_argument("--slurm-prefix", type=Path, default=Path("/tmp/dwf-slurm"),
                    help="else SLURM_CONF=<prefix>/slurm.conf, started by tests/infra/start-slurm.sh if down")
    ap.add_argument("--ctld-port", type=int, default=7817)
    ap.add_argument("--slurmd-port", type=int, default=7818)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "workers.md")
    args = ap.parse_args()
    args.parts = args.parts or (6 if args.quick else 8)
    args.ccds = args.ccds or (4 if args.quick else 6)
    args.cadence = args.cadence or (12.0 if args.quick else 25.0)
    args.repeats = args.repeats or (5 if args.quick else 10)
    args.order = [m.strip() for m in args.order.split(",")]
    if sorted(args.order) != ["arrays", "workers"]:
        raise SystemExit("--order: arrays,workers or workers,arrays")
    argv = " ".join(sys.argv[1:])
    # the Slurm tasks import this checkout's dwfhpc (submitit runs sys.executable with our environment)
    os.environ["PYTHONPATH"] = str(REPO) + (os.pathsep + os.environ["PYTHONPATH"]
                                            if os.environ.get("PYTHONPATH") else "")
    cluster = bench_ingest.ensure_slurm(args)
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="dwf-bench-workers-", dir="/tmp"))
    try:
        say(f"Python start-up alone ({args.repeats} repeats) ...")
        py = python_startup(args.repeats)
        say("making parts and masters ...")
        staged, masters, made = prepare(tmp, args)
        rng = random.Random(args.seed)
        offsets = [i * args.cadence + rng.uniform(0, 1.0) for i in range(args.parts)]
        results = {}
        for mode in args.order:
            say(f"{mode} ...")
            results[mode] = run_mode(mode, tmp, staged, masters, offsets, args)
    finally:
        if args.keep:
            say(f"kept {tmp}")
    time.sleep(2.0)  # the job-completion log is written as the last tasks leave
    starts = jobcomp_starts(cluster["conf"])
    recs = {m: analyse(results[m], starts) for m in results}
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t_start
    text = report(args, argv, cluster, made, py, results, recs, total)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    dump = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "cluster": cluster,
            "python_startup": py, "made": {k: v for k, v in made.items()},
            "modes": {m: {k: v for k, v in results[m].items() if k != "rows"} | {"ccds": recs[m]} for m in results}}
    args.out.with_suffix(".json").write_text(json.dumps(dump, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
