"""Ingest benchmark on a real private Slurm: part -> submitted array latency, and scheduler queries in flight.

In ONE run, on the same cluster, with the same delivery schedule:

* **ours**: :class:`dwfhpc.ingest.Ingest` with the Slurm executor (submitit), in a thread. Real
  packed parts (60 CCDs, K = 4 parts of 15, ``rice``) are renamed into its inbox, tarball first
  and manifest last, one exposure every ``--cadence`` s with its K parts together (as K push
  streams deliver them). Latency of a part = from the rename of its manifest into the inbox to
  the ``t_submitted`` of its array in the state DB, split into the wait for the next inbox scan
  (every ``--inbox-poll`` s, whatever the scheduler poll), the scan until this part is verified
  (tarballs hashed in ``--verify-threads`` threads) and the rest (move, spec, submitit, ``sbatch``).
* **the seed's way**: one file per exposure appears; a single loop writes four sbatch scripts of
  15 CCDs each (``sleep &`` per CCD, then ``wait``), submits each with its own ``sbatch``, and
  follows every job with its own ``squeue -j ID`` each poll. Latency = file appearing ->
  ``sbatch`` returning.

Scheduler calls are counted with PATH shims (``sbatch``, ``squeue``, ``sacct``, ``scontrol``:
append a line to a counter file, then exec the real one) over a window while all exposures are
in flight (tasks start with ``sleep --task-sleep``, so none finishes), at ``--poll`` and at
``--load-poll`` (the shipped default ``ingest.poll_seconds``). A few more exposures are delivered
at ``--load-poll`` to measure latency there too. All benchmark jobs are cancelled at the end.

Parts: one exposure is simulated and packed; the others are the same compressed members in a new
tarball + manifest under a new exposure number (writing 20 x 60 CCDs from scratch would take
~15 min on 2 cores). Sizes, member lists and checksums are real; ingest verifies them in full.

Writes ``benchmarks/results/ingest.md``. Usage::

    python benchmarks/ingest.py [--quick] [--slurm-conf PATH] [--exposures 20] [--ccds 60] [--parts 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from astropy.io import fits

from dwfhpc.atomic import sha256_file
from dwfhpc.config import IngestSettings, load_site
from dwfhpc.ingest import Ingest, IngestOptions
from dwfhpc.ingest import inbox as inbox_module
from dwfhpc.instruments import instrument_for
from dwfhpc.layout import ccd_stem, manifest_name, part_tar_name
from dwfhpc.parts import pack_exposure, read_manifest, verify_part
from dwfhpc.report import percentile as q  # p in 0-100, linear, nan when empty
from dwfhpc.simulate import simulate_decam_exposure

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
START_SLURM = REPO / "tests" / "infra" / "start-slurm.sh"
SHIMMED = ("sbatch", "squeue", "sacct", "scontrol")
STATUS = ("squeue", "sacct", "scontrol")  # scheduler status queries (sbatch is counted apart)
BASE_EXPNUM = 97100000  # job names dwf-DECam_971000NN-pK (ours) and dwfseed-DECam_971000NN-K (seed)
OURS_PREFIX, SEED_PREFIX = "dwf-DECam_9710", "dwfseed-DECam_9710"
REAL: dict[str, str] = {}


# --------------------------------------------------------------------------- the cluster
def real(name: str) -> str:
    if name not in REAL:
        path = shutil.which(name, path=os.environ.get("DWF_BENCH_REAL_PATH", os.environ["PATH"]))
        if not path:
            raise SystemExit(f"{name} not found: install slurm-client (tests/infra/start-slurm.sh does)")
        REAL[name] = path
    return REAL[name]


def slurm_up() -> bool:
    try:
        return subprocess.run([real("sinfo"), "-h"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired, SystemExit):
        return False


def ensure_slurm(args) -> dict:
    """SLURM_CONF set and a controller answering; start the private one as the tests do if not."""
    os.environ["SLURM_CONF"] = str(args.slurm_conf or Path(args.slurm_prefix) / "slurm.conf")
    if not slurm_up():
        if args.slurm_conf:
            raise SystemExit(f"no Slurm answers with SLURM_CONF={args.slurm_conf}")
        env = {**os.environ, "SLURM_PREFIX": str(args.slurm_prefix), "WITH_DBD": "0",
               "CTLD_PORT": str(args.ctld_port), "SLURMD_PORT": str(args.slurmd_port)}
        print(f"starting Slurm in {args.slurm_prefix} ...", file=sys.stderr)
        proc = subprocess.run(["bash", str(START_SLURM)], env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not slurm_up():
            raise SystemExit(f"could not start Slurm: {proc.stderr.strip()[-800:]}")
    version = subprocess.run([real("sinfo"), "--version"], capture_output=True, text=True).stdout.strip()
    cpus = subprocess.run([real("sinfo"), "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()
    nodes = subprocess.run([real("sinfo"), "-h", "-o", "%D"], capture_output=True, text=True).stdout.split()
    return {"version": version, "cpus": "+".join(cpus), "nodes": "+".join(nodes), "conf": os.environ["SLURM_CONF"]}


def our_jobs(prefix: str) -> list[tuple[str, str, str]]:
    """(array or job id, task id, name) of the queued/running jobs whose name starts with prefix."""
    out = subprocess.run([real("squeue"), "-h", "-r", "-o", "%F|%i|%j"], capture_output=True, text=True).stdout
    rows = [line.split("|", 2) for line in out.splitlines() if line.count("|") >= 2]
    return [(f, i, j) for f, i, j in rows if j.startswith(prefix)]


def in_flight(prefix: str) -> tuple[int, int]:
    """(tasks or jobs, exposures) of ours still in the queue."""
    rows = our_jobs(prefix)
    return len(rows), len({j.rsplit("-", 1)[0] for _, _, j in rows})


def cancel(prefix: str, timeout: float = 120) -> None:
    """scancel every job whose name starts with prefix, and wait until they have left the queue."""
    deadline = time.monotonic() + timeout
    while (ids := sorted({f for f, _, _ in our_jobs(prefix)})) and time.monotonic() < deadline:
        subprocess.run([real("scancel"), *ids], capture_output=True)
        time.sleep(1.0)
    if ids:
        print(f"warning: {len(ids)} jobs named {prefix}* still in the queue", file=sys.stderr)


# --------------------------------------------------------------------------- call counting
def make_shims(folder: Path) -> None:
    """sbatch/squeue/sacct/scontrol wrappers: one line per call to $DWF_BENCH_CALLS, then the real one."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in SHIMMED:
        shim = folder / name
        shim.write_text(f'#!/bin/bash\necho "$EPOCHREALTIME {name}" >> "${{DWF_BENCH_CALLS:-/dev/null}}"\n'
                        f'exec {real(name)} "$@"\n')
        shim.chmod(0o755)


def read_calls(path: Path) -> list[tuple[float, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        t, _, name = line.partition(" ")
        try:
            out.append((float(t.replace(",", ".")), name))
        except ValueError:
            continue
    return out


def count(calls, t0: float, t1: float, names=STATUS) -> int:
    return sum(1 for t, n in calls if t0 <= t < t1 and n in names)


# --------------------------------------------------------------------------- parts
def build_parts(root: Path, args) -> tuple[list[list[tuple[Path, Path]]], dict]:
    """Staged (tar, manifest) per part per exposure, in root/staging (same file system as the inboxes)."""
    inst = instrument_for("decam")
    ccds = list(inst.good_ccds)[: args.ccds]
    t = time.perf_counter()
    raw = simulate_decam_exposure(root / "raw", expnum=BASE_EXPNUM - 1, obstype="object", ccds=ccds, seed=7,
                                  jobs=args.jobs)
    t_sim = time.perf_counter() - t
    t = time.perf_counter()
    template = pack_exposure(raw, root / "template", codec=args.codec, parts=args.parts, jobs=args.jobs)
    t_pack = time.perf_counter() - t
    raw.unlink()
    t_verify, t_sha = [], []
    for _ in range(5):  # what the inbox pays per part, alone (in the page cache, as in the run); min of 5
        t = time.perf_counter()
        verify_part(template[0].tar, template[0].manifest, members=False)  # as the inbox runs it
        t_verify.append(time.perf_counter() - t)
        t = time.perf_counter()
        sha256_file(template[0].tar)
        t_sha.append(time.perf_counter() - t)
    members = root / "members"
    for p in template:
        with tarfile.open(p.tar) as tf:
            tf.extractall(members, filter="data")
    staging = root / "staging"
    staging.mkdir()
    t = time.perf_counter()
    n_exp = args.exposures + args.slow_exposures
    exposures = [[clone_part(p.manifest, members, staging, BASE_EXPNUM + i) for p in template] for i in range(n_exp)]
    t_clone = time.perf_counter() - t
    shutil.rmtree(members)
    sizes = [p.tar.stat().st_size for p in template]
    return exposures, {"t_sim": t_sim, "t_pack": t_pack, "t_clone": t_clone, "ccds": len(ccds),
                       "t_verify": min(t_verify), "t_sha": min(t_sha),
                       "part_mb": statistics.mean(sizes) / 1e6, "ccds_per_part": len(ccds) / len(template)}


def clone_part(template_manifest: Path, members: Path, out: Path, expnum: int) -> tuple[Path, Path]:
    """The template part's compressed members under a new exposure number: a new tarball + manifest."""
    m = read_manifest(template_manifest)
    expid = f"DECam_{expnum:08d}"
    new_members = []
    tar_path = out / part_tar_name(expid, m.part, m.parts)
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for mem in m.members:
            name = mem.name.replace(m.expid, expid, 1)
            src = members / mem.name
            ti = tar.gettarinfo(str(src), arcname=name)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            ti.mode = 0o644
            with open(src, "rb") as fh:
                tar.addfile(ti, fh)
            header = fits.Header.fromstring(mem.header)
            if "EXPNUM" in header:
                header["EXPNUM"] = expnum
            new_members.append(dataclasses.replace(mem, name=name, header=header.tostring()))
    assert all(x.name.startswith(ccd_stem(expid, x.ccd)) for x in new_members)
    clone = dataclasses.replace(m, expid=expid, expnum=expnum, tar_name=tar_path.name,
                                tar_bytes=tar_path.stat().st_size, tar_sha256=sha256_file(tar_path),
                                members=new_members, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return tar_path, clone.write(out / manifest_name(expid, m.part, m.parts))


def schedule(n: int, cadence: float, jitter: float, seed: int) -> list[float]:
    """Delivery offsets (s): one exposure every ``cadence`` s plus a random phase against the polls."""
    rng = random.Random(seed)
    return [i * cadence + rng.uniform(0, jitter) for i in range(n)]


def wait_until(t_mono: float) -> None:
    while (d := t_mono - time.monotonic()) > 0:
        time.sleep(min(d, 0.05))


# --------------------------------------------------------------------------- ours
def run_ours(root: Path, exposures, args, plan: dict) -> dict:
    calls_file = root / "calls-ours.txt"
    os.environ["DWF_BENCH_CALLS"] = str(calls_file)
    work = root / "ours"
    site = load_site("local", workdir=work, overrides={
        "ingest": {"executor": "slurm", "poll_seconds": args.poll, "inbox_poll_seconds": args.inbox_poll,
                   "verify_threads": args.verify_threads, "max_jobs": None, "rate": None,
                   "auto_masters": False, "report_every_seconds": 86400, "arrival_grace_seconds": 120,
                   "lost_after_seconds": 3600, "max_attempts": 1},
        "node": {"require_masters": False},
        "scheduler": {"array_parallelism": args.array_parallelism, "setup": [f"sleep {args.task_sleep}"],
                      "time_minutes": max(15, args.task_sleep // 60 + 5), "mem_gb": 1, "cpus_per_task": 1}})
    inbox = site.path(site.ingest.inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    t_ctor = time.time()
    ingest = Ingest(site, IngestOptions(executor="slurm", poll_seconds=args.poll, report=False))
    t_ctor_end = time.time()

    scans: list[tuple[float, float, list[str]]] = []
    polls: list[tuple[float, float, int]] = []  # collector poll: start, end, active tasks
    submits: dict[str, tuple[float, float]] = {}  # part -> executor.submit start, end
    orig_scan, orig_poll, orig_submit = ingest.inbox.scan, ingest.collector.poll, ingest.executor.submit

    def scan(now=None, **kw):
        t0 = time.time()
        r = orig_scan(now, **kw)
        scans.append((t0, time.time(), list(r.accepted)))
        return r

    def poll(now=None):
        t0 = time.time()
        r = orig_poll(now)
        polls.append((t0, time.time(), 0))
        return r

    def submit(request):
        t0 = time.time()
        r = orig_submit(request)
        submits.setdefault(request.part, (t0, time.time()))
        return r

    ingest.inbox.scan, ingest.collector.poll, ingest.executor.submit = scan, poll, submit
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
            ingest.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    reader = sqlite3.connect(str(ingest.state_path), timeout=30)

    def submitted() -> dict[str, float]:
        return dict(reader.execute("SELECT part, MIN(t_submitted) FROM submissions GROUP BY part").fetchall())

    appear: dict[str, float] = {}

    def deliver(parts):
        for tar, man in parts:
            os.replace(tar, inbox / tar.name)
            os.replace(man, inbox / man.name)  # manifest last: from now the part is complete in the inbox
            appear[man.name[: -len(".manifest.json")]] = time.time()

    th = threading.Thread(target=loop, name="ingest", daemon=True)
    th.start()
    try:
        out = phases(args, plan, exposures, deliver, submitted, appear, lambda p: setattr(ingest, "poll_seconds", p),
                     OURS_PREFIX, errors)
    finally:
        ingest.request_stop()
        th.join(timeout=300)
        subs: dict[str, float] = {}
        for s in ingest.db.submissions():
            subs[s.part] = min(s.t_submitted, subs.get(s.part, s.t_submitted))
        n_subs = len(ingest.db.submissions())
        reader.close()
        ingest.close()
        inbox_module.verify_part = orig_verify
        cancel(OURS_PREFIX)
    if errors:
        raise errors[0]
    calls = read_calls(calls_file)
    # per part: appear -> submitted, and where the time went
    rows = []
    for stem, ta in appear.items():
        ts = subs.get(stem)
        if ts is None:
            continue
        scan_of = next(((s0, s1) for s0, s1, acc in scans if stem in acc), None)
        wait = max(0.0, scan_of[0] - ta) if scan_of else float("nan")
        v0, v1 = verifies.get(stem, (float("nan"), float("nan")))
        scanned = v1 - scan_of[0] if scan_of else float("nan")  # scan start -> this part verified
        rows.append({"part": stem, "t_appear": ta, "latency": ts - ta, "wait": wait, "scan": scanned,
                     "rest": ts - v1, "verify": v1 - v0,
                     "sbatch": (submits[stem][1] - submits[stem][0]) if stem in submits else float("nan")})
    out.update(rows=rows, calls=calls, n_submissions=n_subs, t_ctor=(t_ctor, t_ctor_end),
               collector_seconds=[b - a for a, b, _ in polls], poll_starts=[a for a, _, _ in polls])
    return out


# --------------------------------------------------------------------------- the seed's way
SEED_SCRIPT = """#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --output={out}/%j.out
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time={minutes}
# the seed: one command per CCD in the background, then wait for all of them
{lines}
wait
"""


def run_seed(root: Path, args, plan: dict, ccds: list[int], parts: int) -> dict:
    calls_file = root / "calls-seed.txt"
    os.environ["DWF_BENCH_CALLS"] = str(calls_file)
    work = root / "seed"
    inbox, scripts, staging = work / "inbox", work / "scripts", work / "staging"
    for d in (inbox, scripts, staging):
        d.mkdir(parents=True)
    n_exp = args.exposures + args.slow_exposures
    files = []
    for i in range(n_exp):
        f = staging / f"DECam_{BASE_EXPNUM + i:08d}.fits.fz"
        f.write_bytes(b"")  # the seed does not read the file before submitting
        files.append(f)
    groups = [ccds[i::parts] for i in range(parts)]
    state = {"poll": args.poll, "stop": threading.Event()}
    submitted_at: dict[str, float] = {}  # "<expid>-<k>" -> sbatch returned
    seen_at: dict[str, float] = {}
    rounds: list[tuple[float, float, int]] = []
    errors: list[BaseException] = []

    def loop():
        jobs: dict[str, str] = {}
        known: set[str] = set()
        try:
            while not state["stop"].is_set():
                t0 = time.monotonic()
                for f in sorted(inbox.glob("*.fits.fz")):
                    if f.name in known:
                        continue
                    known.add(f.name)
                    expid = f.name.split(".")[0]
                    seen_at[expid] = time.time()
                    for k, group in enumerate(groups, start=1):
                        name = f"dwfseed-{expid}-{k}"
                        script = scripts / f"{expid}-{k}.sh"
                        script.write_text(SEED_SCRIPT.format(
                            name=name, out=scripts, minutes=max(15, args.task_sleep // 60 + 5),
                            lines="\n".join(f"sleep {args.task_sleep} &  # CCD {c}" for c in group)))
                        proc = subprocess.run(["sbatch", str(script)], capture_output=True, text=True)
                        if proc.returncode != 0:
                            raise RuntimeError(f"sbatch refused {script}: {proc.stderr.strip()}")
                        submitted_at[f"{expid}-{k}"] = time.time()
                        jobs[proc.stdout.split()[-1]] = name
                s0 = time.time()
                for jid in list(jobs):  # the seed: one squeue per job per poll
                    proc = subprocess.run(["squeue", "-h", "-j", jid, "-o", "%T"], capture_output=True, text=True)
                    if proc.returncode != 0 or not proc.stdout.strip():
                        del jobs[jid]
                rounds.append((s0, time.time(), len(jobs)))
                state["stop"].wait(max(0.0, state["poll"] - (time.monotonic() - t0)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    appear: dict[str, float] = {}

    def deliver(f: Path):
        os.replace(f, inbox / f.name)
        appear[f.name.split(".")[0]] = time.time()

    def done() -> dict[str, float]:
        return dict(submitted_at)

    th = threading.Thread(target=loop, name="seed", daemon=True)
    th.start()
    try:
        out = phases(args, plan, [[f] for f in files], lambda fs: deliver(fs[0]), done, appear,
                     lambda p: state.__setitem__("poll", p), SEED_PREFIX, errors, per_exposure=parts)
    finally:
        state["stop"].set()
        th.join(timeout=300)
        cancel(SEED_PREFIX)
    if errors:
        raise errors[0]
    rows = []
    for key, ts in submitted_at.items():
        expid = key.rsplit("-", 1)[0]
        ta = appear[expid]
        rows.append({"part": key, "t_appear": ta, "latency": ts - ta, "wait": max(0.0, seen_at[expid] - ta)})
    out.update(rows=rows, calls=read_calls(calls_file), rounds=rounds, poll_starts=[a for a, _, _ in rounds])
    return out


# --------------------------------------------------------------------------- the common schedule
def phases(args, plan, exposures, deliver, submitted, appear, set_poll, prefix, errors, per_exposure=None) -> dict:
    """Deliver at --poll, window A at --poll, window B at --load-poll, then a few deliveries at --load-poll."""
    n_fast = args.exposures
    per_exposure = per_exposure or len(exposures[0])
    out: dict = {"t_phase": time.time()}

    def wait_submitted(n_items: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(submitted()) < n_items and time.monotonic() < deadline and not errors:
            time.sleep(0.1)

    t0 = time.monotonic()
    for off, parts in zip(plan["fast"], exposures[:n_fast]):
        wait_until(t0 + off)
        deliver(parts)
    wait_submitted(n_fast * per_exposure, 180)
    out["t_fast_done"] = time.time()
    time.sleep(2 * args.poll)  # let the last poll after the last submission pass

    out["inflight_a"] = [in_flight(prefix)]
    out["win_a"] = (time.time(), time.time() + args.window_fast)
    time.sleep(args.window_fast)
    out["inflight_a"].append(in_flight(prefix))

    set_poll(args.load_poll)
    time.sleep(args.load_poll + 0.5)  # the wait in progress was computed at the old interval
    out["inflight_b"] = [in_flight(prefix)]
    out["win_b"] = (time.time(), time.time() + args.window)
    time.sleep(args.window)
    out["inflight_b"].append(in_flight(prefix))

    out["slow_from"] = time.time()
    t0 = time.monotonic()
    for off, parts in zip(plan["slow"], exposures[n_fast:]):
        wait_until(t0 + off)
        deliver(parts)
    wait_submitted(len(exposures) * per_exposure, 120)
    out["t_end"] = time.time()
    return out


# --------------------------------------------------------------------------- report
def fmt(x: float, nd: int = 2) -> str:
    return "n/a" if x != x else f"{x:.{nd}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~2 min: 16-CCD exposures, short windows")
    ap.add_argument("--exposures", type=int, default=20, help="exposures in flight")
    ap.add_argument("--ccds", type=int, default=None, help="CCDs per exposure (default 60; --quick 16)")
    ap.add_argument("--parts", type=int, default=4, help="parts per exposure (and the seed's scripts)")
    ap.add_argument("--codec", default="rice")
    ap.add_argument("--cadence", type=float, default=None, help="seconds between exposures (default 3; --quick 1)")
    ap.add_argument("--poll", type=float, default=0.5, help="poll interval for latency (both loops)")
    shipped = IngestSettings.model_fields
    ap.add_argument("--inbox-poll", type=float, default=shipped["inbox_poll_seconds"].default,
                    help="ours: seconds between inbox scans, kept at both polls (the shipped ingest.inbox_poll_seconds)")
    ap.add_argument("--verify-threads", type=int, default=shipped["verify_threads"].default, help="ours: parts hashed at once (ingest.verify_threads)")
    ap.add_argument("--load-poll", type=float, default=5.0, help="second poll interval (the shipped default)")
    ap.add_argument("--window-fast", type=float, default=None, help="counting window at --poll (s; default 30)")
    ap.add_argument("--window", type=float, default=None, help="counting window at --load-poll (s; default 60)")
    ap.add_argument("--slow-exposures", type=int, default=None, help="exposures delivered at --load-poll (default 4)")
    ap.add_argument("--task-sleep", type=int, default=1800, help="each task/CCD sleeps this long (keeps them in flight)")
    ap.add_argument("--array-parallelism", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes for simulate/pack")
    ap.add_argument("--slurm-conf", type=Path, default=None, help="use this running cluster")
    ap.add_argument("--slurm-prefix", type=Path, default=Path("/tmp/dwf-slurm"),
                    help="else SLURM_CONF=<prefix>/slurm.conf, started by tests/infra/start-slurm.sh if down")
    ap.add_argument("--ctld-port", type=int, default=7817)
    ap.add_argument("--slurmd-port", type=int, default=7818)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ingest.md")
    args = ap.parse_args()
    quick = args.quick
    args.ccds = args.ccds or (16 if quick else 60)
    args.cadence = args.cadence or (1.0 if quick else 3.0)
    args.window_fast = args.window_fast or (10.0 if quick else 30.0)
    args.window = args.window or (15.0 if quick else 60.0)
    args.slow_exposures = 2 if (args.slow_exposures is None and quick) else (4 if args.slow_exposures is None
                                                                              else args.slow_exposures)
    argv = " ".join(sys.argv[1:])

    os.environ["DWF_BENCH_REAL_PATH"] = os.environ["PATH"]
    cluster = ensure_slurm(args)
    foreign = [j for j in subprocess.run([real("squeue"), "-h", "-o", "%j"], capture_output=True,
                                         text=True).stdout.split() if not j.startswith((OURS_PREFIX, SEED_PREFIX))]
    cancel(OURS_PREFIX)
    cancel(SEED_PREFIX)
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="dwf-bench-ingest-", dir="/tmp"))
    try:
        make_shims(tmp / "shims")
        os.environ["PATH"] = f"{tmp / 'shims'}{os.pathsep}{os.environ['PATH']}"
        print("making parts ...", file=sys.stderr)
        exposures, made = build_parts(tmp, args)
        plan = {"fast": schedule(args.exposures, args.cadence, args.poll, 1),
                "slow": schedule(args.slow_exposures, args.load_poll * 1.5, args.load_poll, 2)}
        print("ours ...", file=sys.stderr)
        ours = run_ours(tmp, exposures, args, plan)
        inst = instrument_for("decam")
        print("the seed's way ...", file=sys.stderr)
        seed = run_seed(tmp, args, plan, list(inst.good_ccds)[: args.ccds], args.parts)
    finally:
        os.environ["PATH"] = os.environ["DWF_BENCH_REAL_PATH"]
        cancel(OURS_PREFIX)
        cancel(SEED_PREFIX)
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t_start
    text = report(args, argv, cluster, foreign, made, ours, seed, total)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


def report(args, argv, cluster, foreign, made, ours, seed, total) -> str:
    # tag rows with exposure, appear and submitted times
    for r in ours["rows"]:
        r["expid"] = r["part"].split(".")[0]
    for r in seed["rows"]:
        r["expid"] = r["part"].rsplit("-", 1)[0]
    o_fast = [r for r in ours["rows"] if not is_slow(r, ours, args)]
    o_slow = [r for r in ours["rows"] if is_slow(r, ours, args)]
    s_fast = [r for r in seed["rows"] if not is_slow(r, seed, args)]
    s_slow = [r for r in seed["rows"] if is_slow(r, seed, args)]

    def lat(rows, key="latency"):
        return [r[key] for r in rows]

    def exp_lat(rows):
        by: dict[str, list[float]] = {}
        for r in rows:
            by.setdefault(r["expid"], []).append(r["latency"])
        return [max(v) for v in by.values()]  # the K parts of an exposure appear together

    def rate(res, win):
        t0, t1 = res[win]
        return count(res["calls"], t0, t1) * 60.0 / (t1 - t0)

    def per_poll(res, win):
        """Status queries per poll of the loop, over its rounds that started in the window."""
        t0, t1 = res[win]
        starts = [t for t in res["poll_starts"] if t0 <= t < t1]
        after = [t for t in res["poll_starts"] if t >= t1]
        if not starts or not after:
            return float("nan")
        return count(res["calls"], starts[0], after[0]) / len(starts)  # whole rounds only

    n_exp = args.exposures + args.slow_exposures
    o_sbatch = sum(1 for _, n in ours["calls"] if n == "sbatch")
    s_sbatch = sum(1 for _, n in seed["calls"] if n == "sbatch")
    c0, c1 = ours["t_ctor"]
    o_startup = count(ours["calls"], c0 - 0.01, c1 + 0.01, names=("scontrol",))
    by_name = {w: {n: count(ours["calls"], *ours[w], names=(n,)) for n in STATUS} for w in ("win_a", "win_b")}
    seed_rounds_a = [r for r in seed["rounds"] if seed["win_a"][0] <= r[0] < seed["win_a"][1]]
    round_s_a = statistics.median([b - a for a, b, _ in seed_rounds_a]) if seed_rounds_a else float("nan")
    coll = [x for x in ours["collector_seconds"]]

    o50, o95 = q(lat(o_fast), 50), q(lat(o_fast), 95)
    s50, s95 = q(lat(s_fast), 50), q(lat(s_fast), 95)
    ra, rb = rate(ours, "win_a"), rate(ours, "win_b")
    sa, sb = rate(seed, "win_a"), rate(seed, "win_b")
    met = o95 < 1.0
    row = lambda name, a, b, nd=2, ratio=True: (  # noqa: E731
        f"| {name} | {fmt(a, nd)} | {fmt(b, nd)} | {fmt(b / a, 1) + 'x' if ratio and a else ''} |")
    infl = lambda res, w: "{} -> {} tasks/jobs, {} -> {} exposures".format(  # noqa: E731
        res[w][0][0], res[w][1][0], res[w][0][1], res[w][1][1])
    hashing = ("the parts of one scan are hashed one after the other (`ingest.verify_threads` 1)"
               if args.verify_threads == 1 else
               f"the parts of one scan are hashed at once in {args.verify_threads} threads, so one part's figure "
               "includes sharing the cores with the others")
    lines = [
        "# Ingest benchmark: part -> array submitted, and scheduler queries with exposures in flight",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, nproc {os.cpu_count()} (shared with other "
        f"work), python {platform.python_version()}, {cluster['version']} (private, no slurmdbd: "
        f"{cluster['nodes']} node, {cluster['cpus']} CPUs; `SLURM_CONF={cluster['conf']}`). "
        f"`python benchmarks/ingest.py {argv}`".rstrip() + f" ({total / 60:.1f} min in all)",
        "",
        "Parameters: "
        f"{args.exposures} exposures of {made['ccds']} CCDs, K = {args.parts} parts ({made['ccds_per_part']:g} CCDs, "
        f"{made['part_mb']:.0f} MB each, `{args.codec}`) delivered one exposure every {args.cadence:g} s (+ up to one "
        f"poll of random phase), the K parts of an exposure together (tarball, then manifest, renamed in); "
        f"both loops poll every **{args.poll:g} s** while they arrive (ours scans its inbox every {args.inbox_poll:g} s "
        f"throughout, `ingest.inbox_poll_seconds`, and asks the scheduler once per poll; the seed's one loop lists "
        f"its inbox and polls its jobs at the poll); then counting windows of "
        f"{args.window_fast:g} s at {args.poll:g} s and {args.window:g} s at **{args.load_poll:g} s** (the shipped "
        f"default `ingest.poll_seconds`), then {args.slow_exposures} more exposures at {args.load_poll:g} s. Every "
        f"task / CCD command starts with `sleep {args.task_sleep}`, so nothing finishes: all exposures stay in flight "
        f"(queued or running) until the benchmark cancels them. Ours: `Ingest(site, IngestOptions(executor=\"slurm\"))`, "
        f"submitit, array_parallelism {args.array_parallelism}, 1 CPU + 1 GB per task. The seed: per exposure four "
        f"sbatch scripts of {made['ccds_per_part']:g} CCDs (`sleep &` per CCD, `wait`), one `sbatch` each, "
        f"1 CPU + 1 GB per job, then one `squeue -j ID` per job per poll, all in one loop. Same delivery schedule, "
        "same cluster, one after the other (queue emptied between). Parts: one simulated exposure packed once, the "
        f"others are its compressed members re-tarred under new exposure numbers (simulate {made['t_sim']:.0f} s, "
        f"pack {made['t_pack']:.0f} s, {n_exp * args.parts} clones {made['t_clone']:.0f} s).",
        "",
        "| | ours (dwfhpc ingest) | the seed | seed / ours (< 1: the seed is faster / makes fewer) |",
        "|---|---:|---:|---:|",
        row(f"latency part -> array submitted, p50 (s), poll {args.poll:g} s", o50, s50),
        row(f"latency part -> array submitted, p95 (s), poll {args.poll:g} s", o95, s95),
        row(f"latency exposure -> all {args.parts} submitted, p50 (s), poll {args.poll:g} s",
            q(exp_lat(o_fast), 50), q(exp_lat(s_fast), 50)),
        row(f"latency exposure -> all {args.parts} submitted, p95 (s), poll {args.poll:g} s",
            q(exp_lat(o_fast), 95), q(exp_lat(s_fast), 95)),
        row(f"latency part -> array submitted, p50 (s), poll {args.load_poll:g} s (n = {len(o_slow)} / {len(s_slow)})",
            q(lat(o_slow), 50), q(lat(s_slow), 50)),
        row(f"latency part -> array submitted, p95 (s), poll {args.load_poll:g} s",
            q(lat(o_slow), 95), q(lat(s_slow), 95)),
        row("sbatch calls per exposure", o_sbatch / n_exp, s_sbatch / n_exp),
        row(f"status queries per minute, poll {args.poll:g} s, all {args.exposures} in flight", ra, sa, 0),
        row(f"status queries per minute, poll {args.load_poll:g} s, all {args.exposures} in flight", rb, sb, 0),
        row(f"status queries per poll, poll {args.load_poll:g} s", per_poll(ours, "win_b"), per_poll(seed, "win_b"), 1),
        "",
        f"- **Target < 1 s (part complete -> array submitted): {'met' if met else 'NOT met'}** at a "
        f"{args.poll:g} s poll (p95 {o95:.2f} s over {len(o_fast)} parts, p50 {o50:.2f} s); at the shipped "
        f"{args.load_poll:g} s scheduler poll ours still scans the inbox every {args.inbox_poll:g} s "
        f"(measured p50 {fmt(q(lat(o_slow), 50))} s, p95 {fmt(q(lat(o_slow), 95))} s, n = {len(o_slow)}; "
        f"{'met' if q(lat(o_slow), 95) < 1.0 else 'NOT met'}), while the seed's wait for its loop is up to "
        f"{args.load_poll:g} s.",
        f"- Where ours spends it ({args.poll:g} s poll, p50 / p95, s): wait for the next inbox scan "
        f"{fmt(q(lat(o_fast, 'wait'), 50))} / {fmt(q(lat(o_fast, 'wait'), 95))}; inbox scan that took the part "
        f"from its start until this part is verified (sha256 of the tarball, member list; {hashing}, accepted and "
        f"submitted oldest first) {fmt(q(lat(o_fast, 'scan'), 50))} / "
        f"{fmt(q(lat(o_fast, 'scan'), 95))}; verified -> submitted (move, spec, submitit pickles, "
        f"`sbatch`) {fmt(q(lat(o_fast, 'rest'), 50))} / {fmt(q(lat(o_fast, 'rest'), 95))}, of which "
        f"the submit call itself {fmt(q(lat(o_fast, 'sbatch'), 50))} / {fmt(q(lat(o_fast, 'sbatch'), 95))}. "
        f"Processing only (latency minus the wait for the scan): p50 "
        f"{fmt(q([r['latency'] - r['wait'] for r in o_fast], 50))}, p95 "
        f"{fmt(q([r['latency'] - r['wait'] for r in o_fast], 95))}. Collector poll (one `squeue` of up to "
        f"{ours['inflight_a'][0][0]} tasks + DB): median {fmt(statistics.median(coll) if coll else float('nan'), 3)} s.",
        f"- `verify_part` of one part: {fmt(q(lat(o_fast, 'verify'), 50), 3)} s p50, {fmt(q(lat(o_fast, 'verify'), 95), 3)}"
        f" s p95 in the run; alone, before the run: {made['t_verify']:.3f} s, against {made['t_sha']:.3f} s for the "
        f"sha256 of the tarball alone; the inbox hashes the tarball only (`members=False`: each member's digest "
        f"is checked again when the node extracts it); {hashing} ({os.cpu_count()} cores here); each part is "
        f"submitted as soon as it and the parts older than it are verified.",
        f"- Seed latency: wait for its loop {fmt(q(lat(s_fast, 'wait'), 50))} / {fmt(q(lat(s_fast, 'wait'), 95))} s "
        f"(p50 / p95); its loop's `squeue -j` round over all jobs took {fmt(round_s_a)} s (median) in the "
        f"{args.poll:g} s window: it comes round every max(poll, round), and the round grows with the jobs in flight.",
        f"- Ratios (seed / ours): latency p50 {s50 / o50:.1f}x, p95 {s95 / o95:.1f}x; status queries per minute "
        f"{sa / ra:.0f}x at {args.poll:g} s, {sb / rb:.0f}x at {args.load_poll:g} s; sbatch per exposure "
        f"{(s_sbatch / n_exp) / (o_sbatch / n_exp):.2f}x.",
        f"- In flight during the windows: ours {infl(ours, 'inflight_a')} ({args.poll:g} s), "
        f"{infl(ours, 'inflight_b')} ({args.load_poll:g} s); seed {infl(seed, 'inflight_a')}, "
        f"{infl(seed, 'inflight_b')}. Ours' status calls by name: {by_name['win_a']} at {args.poll:g} s, "
        f"{by_name['win_b']} at {args.load_poll:g} s; plus {o_startup} `scontrol` at start-up (ping, MaxArraySize). "
        f"Arrays submitted by ours: {ours['n_submissions']} for {n_exp * args.parts} parts.",
        *([f"- Other jobs were in the queue at the start (not ours, not counted): {len(foreign)}."] if foreign else []),
        "",
        "What this shows and what it does not:",
        "- Ours makes one scheduler status query per poll whatever the number of tasks (one `squeue -r -u` for all "
        "of them; `sacct` only for tasks that vanished without a result, none here); the seed makes one per job per "
        "poll, so its rate grows with the jobs in flight (and its loop slows down as it does). The per-minute figures "
        "scale as 1 / poll for both; the per-poll figures do not depend on it.",
        "- sbatch calls per exposure are the same (K arrays vs four scripts): arrays do not save submissions here, "
        "they save status queries and give one scheduler task per CCD (retries, resources, accounting per CCD).",
        "- Latency is from the manifest's rename into the inbox (push makes the part visible the same way) to "
        "`sbatch` having returned, as the state DB records it. It does not include the transfer, the time the "
        "array then waits in the queue, or the task. The seed's latency includes no check of the file at all "
        "(it submitted on sight); ours includes a sha256 check of each part's tarball, "
        "from the page cache here (the parts were just written), which on a shared file system can be slower.",
        "- One node with 4 CPUs, a controller on the same 2-core VM as the benchmark and both loops; a real "
        "cluster's controller answers `squeue` / `sbatch` more slowly under load, which hurts the seed's per-job "
        "polling more than ours. The seed's jobs ask 1 CPU here (the seed ran 15 CCDs on a node), so both fit the "
        "same node the same way.",
        "",
    ]
    return "\n".join(lines)


def is_slow(row: dict, res: dict, args) -> bool:
    return row.get("t_appear", 0.0) >= res["slow_from"]


if __name__ == "__main__":
    sys.exit(main())
