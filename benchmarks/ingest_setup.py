"""Set-up for ``benchmarks/ingest.py``: the private Slurm, the call-counting shims, the parts and the
delivery schedule both loops are run through (:func:`phases`)."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path

from astropy.io import fits

from dwfhpc.atomic import sha256_file
from dwfhpc.instruments import instrument_for
from dwfhpc.layout import ccd_stem, manifest_name, part_tar_name
from dwfhpc.parts import pack_exposure, read_manifest, verify_part
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

