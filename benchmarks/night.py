"""A simulated night over the emulated WAN: latency from file complete to products, by stage, vs the seed.

Needs root (network namespaces), Slurm (the private one of ``tests/infra/start-slurm.sh``, started
if ``SLURM_CONF`` is not set), sshd and rsync. In ONE run:

1. ``dwfhpc simulate`` makes the night's DECam exposures (biases and dome flats, then science)
   into a stash (so the simulator's CPU is not charged to the pipeline: a real telescope has its
   own computers); a simulated telescope then *writes* them into the raw folder (copy + rename)
   at the cadence: calibration frames at dusk every ``--cal-cadence`` s, then science every
   ``--cadence`` s;
2. the real ``dwfhpc push --streams 4`` runs inside the telescope namespace (``dwfwan-cli``) and
   delivers over rsync/ssh through the emulated 300 ms RTT / 200 Mbit/s link
   (``tests/infra/wan``) to the sshd in the cluster namespace, whose file system is this host's:
   the receiver's staging and inbox are host folders;
3. the real ``dwfhpc ingest --array --executor slurm`` runs on the host, on the host's Slurm;
4. then, on the same link and the same cluster, the seed's path for ``--seed-exposures`` of the
   same science exposures, one at a time: one tarball of the raw exposure, one ``scp`` (new
   connection), untar on the shared FS, sbatch scripts of 15 CCDs each running ``dwfhpc calibrate``
   per CCD with the night's masters (those our run built).

Only the command line is used; the figures come from read-only SQLite queries of the state DB and
the push journal, the node result JSON stored in the state DB (``tasks.result``: ``started``,
``finished``, ``timings``), Slurm's job-completion log (``JobCompLoc``: the array task's
StartTime, 1 s resolution) and the telescope's own log of when each file was complete.

Stages of one CCD (file complete = the telescope closed the file):
wait-for-complete (journal ``t_complete`` - written), pack (the CCD's part packed - ``t_complete``:
waiting for the packing pool included), transfer (the part confirmed in the inbox - the part packed:
waiting for a free stream included), inbox (state DB part ``t_verified`` - part confirmed),
hold (task ``t_submitted`` - ``t_verified``: waiting for the night's masters, throttles, submission),
queue (Slurm StartTime - ``t_submitted``: the Slurm queue), start
(node code ``started`` - Slurm StartTime: launch, interpreter, submitit), stage (stage + verify +
decompress), calibrate (calibrate + QA), copy back; "other" is what the stages leave unexplained.

Writes ``benchmarks/results/night.md`` (and ``night.json``). Usage::

    sudo python benchmarks/night.py [--ccds 1-62] [--exposures 6] [--cadence 150] [--biases 2] [--flats 2]

``--faults`` (issue 15 item 2) runs a fault campaign instead: a small night (4 CCDs per exposure, one
every 25 s) on a private Slurm of its own (``--slurm-prefix``, ports 7837-7839, so stopping its
slurmd disturbs nobody) with node scratch on a small tmpfs, and injects, each while exposures are in
flight (``FAULT_AT``): the link cut 30 s; ``kill -9`` of push mid-transfer, restarted; ``kill -9``
of ingest, restarted; slurmd stopped 20 s and started again by ``start-slurm.sh``; ``scancel`` of a
running task; the scratch filled for 30 s; one byte flipped in a delivered part in the receiver's
staging; a raw file written truncated; a delivered part copied into the inbox again. The restarts
stand in for a supervisor; nothing else is done by hand until the night is quiet, when an operator's
``push --once --mode end-of-night`` reconcile is run (reported apart). What detected and what
recovered each fault is read from the push journal, the state DB (a snapshot taken before the
reconcile), every node result file seen during the night, the Slurm queue and the push logs.
Writes ``benchmarks/results/night_faults.md`` (and ``.json``; ``--reanalyse`` redoes the tables from
``--work``). Usage::

    PYTHONPATH=. python3 benchmarks/night.py --faults [--only link-cut,scancel] [--fault-scale 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "infra" / "wan"))
import wanlink  # noqa: E402

from dwfhpc.instruments import instrument_for  # noqa: E402

STAGES = ("wait", "pack", "transfer", "inbox", "hold", "queue", "start", "stage", "calibrate", "copyback", "other")
STAGE_NAMES = {"wait": "wait-for-complete", "hold": "hold (masters, throttle) + submit", "queue": "Slurm queue",
               "copyback": "copy back"}
SEED_STAGES = ("pack", "transfer", "untar", "queue", "calibrate")
SEED_CCDS_PER_JOB = 15


def say(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


def env(extra: dict | None = None) -> dict:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO), **(extra or {})}


def dwfhpc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dwfhpc", *args]


def stream_transport(args) -> dict:
    """``--stream``: the streamed transport, its receiver this checkout's dwfhpc (the sshd shares this host)."""
    if not getattr(args, "stream", False):
        return {}
    return {"stream": True, "receiver_command": f"env PYTHONPATH={REPO} {sys.executable} -m dwfhpc"}


def pct(values, q) -> float:
    values = [v for v in values if v is not None]
    return float(np.percentile(values, q)) if values else float("nan")


# --------------------------------------------------------------------------- Slurm
def slurm_env() -> dict:
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        prefix = Path("/tmp/dwf-slurm")
        proc = subprocess.run(["bash", str(REPO / "tests" / "infra" / "start-slurm.sh")], capture_output=True, text=True,
                              env={**os.environ, "SLURM_PREFIX": str(prefix), "WITH_DBD": "0"}, timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"night.py: error: could not start Slurm: {proc.stderr.strip()[-400:]}")
        conf = str(prefix / "slurm.conf")
    return {"SLURM_CONF": conf}


def jobcomp_starts(slurm: dict) -> dict[str, float]:
    """``<array job>_<task>`` (and plain job ids) -> StartTime (Unix s) from Slurm's job-completion log."""
    loc = None
    for line in Path(slurm["SLURM_CONF"]).read_text().splitlines():
        if line.startswith("JobCompLoc="):
            loc = Path(line.split("=", 1)[1].strip())
    out: dict[str, float] = {}
    if not loc or not loc.exists():
        return out
    for line in loc.read_text().splitlines():
        f = dict(w.split("=", 1) for w in line.split() if "=" in w)
        try:
            start = time.mktime(time.strptime(f["StartTime"], "%Y-%m-%dT%H:%M:%S"))
        except (KeyError, ValueError):
            continue
        out[f.get("JobId", "")] = start
        if f.get("ArrayJobId") and f.get("ArrayTaskId"):
            out[f"{f['ArrayJobId']}_{f['ArrayTaskId']}"] = start
    return out


# --------------------------------------------------------------------------- machine load
class LoadSampler(threading.Thread):
    """Appends ``<unix time> <1-min load average>`` to a file every 15 s (the machine is shared)."""

    def __init__(self, path: Path):
        super().__init__(name="load", daemon=True)
        self.path, self.stop = path, threading.Event()

    def run(self) -> None:
        with self.path.open("a") as f:
            while not self.stop.is_set():
                f.write(f"{time.time():.0f} {Path('/proc/loadavg').read_text().split()[0]}\n")
                f.flush()
                self.stop.wait(15)


def load_between(path: Path, t0: float, t1: float) -> str:
    if not path.exists():
        return "not sampled"
    v = [float(b) for a, b, *_ in (line.split() for line in path.read_text().splitlines()) if t0 <= float(a) <= t1]
    return f"1-min load average p50 {np.median(v):.1f}, max {max(v):.1f} ({len(v)} samples)" if v else "not sampled"


# --------------------------------------------------------------------------- the telescope
class Telescope(threading.Thread):
    """Writes the stash's files into the raw folder at the cadence (copy to a dot-name, then rename)."""

    def __init__(self, files: list[tuple[Path, str]], raw: Path, cal_cadence: float, cadence: float,
                 truncate: set[str] | frozenset[str] = frozenset()):
        super().__init__(name="telescope", daemon=True)
        self.files, self.raw, self.cal_cadence, self.cadence = files, raw, cal_cadence, cadence
        self.truncate = truncate  # file names written cut to half their size (the --faults campaign)
        self.written: dict[str, float] = {}
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            t_next = time.time()
            prev_kind = None
            for path, kind in self.files:
                if prev_kind is not None:
                    t_next += self.cadence if kind == "science" else self.cal_cadence
                prev_kind = kind
                if self.stop.wait(max(0.0, t_next - time.time())):
                    return
                tmp = self.raw / f".{path.name}.part"
                shutil.copyfile(path, tmp)
                if path.name in self.truncate:
                    os.truncate(tmp, path.stat().st_size // 2)
                os.replace(tmp, self.raw / path.name)
                self.written[path.name.split(".")[0]] = time.time()
                say(f"telescope: {path.name} ({kind}) written" + (" TRUNCATED" if path.name in self.truncate else ""))
        except BaseException as exc:  # noqa: BLE001 - reported by the driver
            self.error = exc


def stash_files(stash: Path) -> list[tuple[Path, str]]:
    out = []
    for p in sorted(stash.glob("DECam_*.fits.fz")):
        info = json.loads(subprocess.run(dwfhpc("info", str(p), "--json"), env=env(), capture_output=True, text=True,
                                         check=True).stdout)
        out.append((p, "science" if info.get("kind") == "science" else "cal"))
    return out


# --------------------------------------------------------------------------- our night
def simulate_night(args, work: Path) -> tuple[list, list[Path], list[int]]:
    """Write the night's raw files into ``work/stash``: (files with kinds, science files, CCDs to calibrate).

    The CCDs are those of ``--ccds`` that push packs: the instrument's known-bad CCDs (DECam's 61) are left out."""
    t = time.time()
    subprocess.run(dwfhpc("simulate", "--biases", str(args.biases), "--flats", str(args.flats), "--exposures",
                          str(args.exposures), "--ccds", args.ccds, "--out", str(work / "stash")),
                   env=env(), check=True, stdout=subprocess.DEVNULL)
    files = stash_files(work / "stash")
    sci = [p for p, k in files if k == "science"]
    info = json.loads(subprocess.run(dwfhpc("info", str(sci[0]), "--json"), env=env(), capture_output=True, text=True,
                                     check=True).stdout)
    good = set(instrument_for(info["instrument"]).good_ccds)
    ccds = sorted(int(c) for c in info["ccds"] if int(c) in good)
    bad = sorted(int(c) for c in info["ccds"] if int(c) not in good)
    say(f"simulated {len(files)} exposures in {time.time() - t:.0f} s; {len(ccds)} CCDs each to calibrate"
        + (f" (known-bad left out: {bad})" if bad else ""))
    return files, sci, ccds


def run_ours(args, work: Path, wan: wanlink.Wan, slurm: dict, files, nccd: int) -> dict:
    raw = work / "telescope" / "raw"
    for d in (raw, work / "cluster" / "staging", work / "cluster" / "inbox"):
        d.mkdir(parents=True, exist_ok=True)
    refcat = work / "cluster" / "refcat.fits"
    shutil.copyfile(work / "stash" / "refcat.fits", refcat)
    site = work / "site.yaml"
    site.write_text(wanlink.site_yaml(
        workdir=work, wan=wan, streams=args.streams, parts=args.streams,
        ingest={"poll_seconds": 2, "report_every_seconds": 600},
        scheduler={"time_minutes": 30, "mem_gb": 1, "array_parallelism": 64},
        calibration={"refcat": str(refcat)}, transport=stream_transport(args)))
    subprocess.run(dwfhpc("config", "check", str(site)), env=env(), check=True, capture_output=True)
    logs = {n: (work / f"{n}.log").open("w") for n in ("ingest", "push")}
    procs = {
        "ingest": subprocess.Popen(dwfhpc("ingest", "--config", str(site), "--array", "--executor", "slurm"),
                                   env=env(slurm), stdout=logs["ingest"], stderr=subprocess.STDOUT),
        "push": subprocess.Popen(wan.in_client(dwfhpc("push", "--config", str(site), "--streams", str(args.streams),
                                                      "--no-live")),
                                 env=env(), stdout=logs["push"], stderr=subprocess.STDOUT)}
    tel = Telescope(files, raw, args.cal_cadence, args.cadence)
    state = work / "cluster" / "state.sqlite"
    expected = len(files) * nccd
    t0 = time.time()
    tel.start()
    last = 0.0
    try:
        while True:
            counts = {r["state"]: r["n"] for r in wanlink.query(state, "SELECT state, count(*) n FROM tasks GROUP BY state")}
            final = sum(counts.get(s, 0) for s in ("done", "failed", "lost"))
            if final >= expected and not tel.is_alive():
                break
            for name, p in procs.items():
                if p.poll() is not None:
                    raise SystemExit(f"night.py: error: {name} exited (see {work / (name + '.log')})")
            if tel.error:
                raise SystemExit(f"night.py: error: telescope: {tel.error}")
            if time.time() - t0 > args.timeout:
                raise SystemExit(f"night.py: error: timed out after {args.timeout:.0f} s: tasks {counts}")
            if time.time() - last > 30:
                say(f"tasks {counts} of {expected}")
                last = time.time()
            time.sleep(1)
    finally:
        tel.stop.set()
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
    say(f"our night: {expected} CCD tasks final in {time.time() - t0:.0f} s")
    (work / "telescope" / "written.json").write_text(json.dumps(tel.written))
    return {"written": tel.written, "state": state, "journal": work / "telescope" / "push-journal.sqlite",
            "site": site, "wall": time.time() - t0}


def analyse_ours(run: dict, slurm: dict) -> dict:
    journal, state = run["journal"], run["state"]
    jexp = {r["expid"]: dict(r) for r in wanlink.query(journal, "SELECT * FROM exposures")}
    jpart = {(r["expid"], r["k"]): dict(r) for r in wanlink.query(journal, "SELECT * FROM parts")}
    sparts = {r["stem"]: dict(r) for r in wanlink.query(state, "SELECT * FROM parts")}
    tasks = [dict(r) for r in wanlink.query(state, "SELECT * FROM tasks")]
    starts = jobcomp_starts(slurm)
    ccds, counts = [], {}
    for t in tasks:
        counts[(t["kind"], t["state"])] = counts.get((t["kind"], t["state"]), 0) + 1
        if t["kind"] != "science" or t["state"] != "done":
            continue
        res = json.loads(t["result"])
        tm = res.get("timings", {})
        sp = sparts[t["part"]]
        e = jexp[t["expid"]]
        jp = jpart[(t["expid"], sp["k"])]
        written = run["written"].get(t["expid"])
        s_start = starts.get(t["job_id"])
        st = {
            "wait": e["t_complete"] - written,
            "pack": jp["t_packed"] - e["t_complete"],
            "transfer": jp["t_confirmed"] - jp["t_packed"],
            "inbox": sp["t_verified"] - jp["t_confirmed"],
            "hold": t["t_submitted"] - sp["t_verified"],
            "queue": (s_start - t["t_submitted"]) if s_start else None,
            "start": (res["started"] - s_start) if s_start else None,
            "stage": tm.get("stage", 0) + tm.get("verify", 0) + tm.get("decompress", 0),
            "calibrate": tm.get("calibrate", 0) + tm.get("qa", 0),
            "copyback": tm.get("copyback", 0),
        }
        total = res["finished"] - written
        st["other"] = total - sum(v for v in st.values() if v is not None)
        ccds.append({"expid": t["expid"], "ccd": t["ccd"], "total": total, "finished": res["finished"],
                     "attempt": t["attempt"], "stages": st})
    exposures = []
    for expid in sorted({c["expid"] for c in ccds}):
        mine = [c for c in ccds if c["expid"] == expid]
        last = max(mine, key=lambda c: c["finished"])
        e = jexp[expid]
        first_start = min((starts.get(t["job_id"]) for t in tasks if t["expid"] == expid and starts.get(t["job_id"])),
                          default=None)
        exposures.append({"expid": expid, "ccds": len(mine), "total": last["total"], "stages": last["stages"],
                          "written": run["written"].get(expid), "finished": last["finished"],
                          "pack_busy": e["t_packed"] - e["t_pack_start"], "send_busy": e["t_delivered"] - e["t_packed"],
                          "cluster_busy": (last["finished"] - first_start) if first_start else None})
    subs = wanlink.query(state, "SELECT part FROM submissions")
    retries = wanlink.query(journal, "SELECT count(*) n FROM events WHERE message LIKE 'retry%'")[0]["n"]
    return {"ccds": ccds, "exposures": exposures, "counts": {f"{k}/{s}": n for (k, s), n in counts.items()},
            "submissions": len(subs), "parts": len(sparts), "push_retries": retries,
            "max_attempt": max((t["attempt"] for t in tasks), default=0)}


# --------------------------------------------------------------------------- the seed's path
def run_seed(raw: Path, work: Path, wan: wanlink.Wan, slurm: dict, masters: Path, refcat: Path, ccds: list[int]) -> dict:
    """One exposure the seed's way; returns its timings (Unix seconds)."""
    expid = raw.name.split(".")[0]
    d = work / "seed" / expid
    out_tel, incoming, shared, products = d / "telescope", d / "incoming", d / "raw", d / "products"
    for x in (out_tel, incoming, shared, products):
        x.mkdir(parents=True, exist_ok=True)
    r = {"expid": expid, "t0": time.time()}
    tar = out_tel / f"{expid}.tar"
    subprocess.run(["tar", "cf", str(tar), "-C", str(raw.parent), raw.name], check=True)
    r["t_tar"] = time.time()
    scp = ["scp", "-O", "-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
           "-o", f"UserKnownHostsFile={wan.known_hosts}", "-i", str(wan.key), "-o", "IdentitiesOnly=yes",
           str(tar), f"root@{wan.server_ip}:{incoming}/"]
    subprocess.run(wan.in_client(scp), check=True, timeout=1800)
    r["t_scp"] = time.time()
    subprocess.run(["tar", "xf", str(incoming / tar.name), "-C", str(shared)], check=True)
    r["t_untar"] = time.time()
    rawfile = shared / raw.name
    jobs = []
    for j in range(math.ceil(len(ccds) / SEED_CCDS_PER_JOB)):
        chunk = ccds[j * SEED_CCDS_PER_JOB:(j + 1) * SEED_CCDS_PER_JOB]
        times = d / f"times-{j}.txt"
        script = d / f"job-{j}.sbatch"
        calib = " ".join(dwfhpc("calibrate", str(rawfile), "--ccd", "$c", "--bias", str(masters), "--flat", str(masters),
                                "--refcat", str(refcat), "--out", str(products)))
        script.write_text(
            "#!/bin/bash\n"
            f"#SBATCH -J seed-{expid}-{j}\n#SBATCH -o {d}/job-{j}.log\n#SBATCH -t 60\n#SBATCH --mem=2G\n#SBATCH -c 1\n"
            f"echo start $(date +%s.%N) > {times}\n"
            f"for c in {' '.join(map(str, chunk))}; do\n"
            f"  {calib} >/dev/null && echo $c $(date +%s.%N) >> {times}\n"
            "done\n"
            f"echo end $(date +%s.%N) >> {times}\n")
        jobs.append(times)
        subprocess.run(["sbatch", "--parsable", str(script)], env=env(slurm), check=True, capture_output=True)
    r["t_submitted"] = time.time()
    deadline = time.time() + 1800
    while not all(t.exists() and "end " in t.read_text() for t in jobs):
        if time.time() > deadline:
            raise SystemExit(f"night.py: error: the seed's jobs for {expid} did not finish")
        time.sleep(0.5)
    starts, done = [], {}
    for t in jobs:
        for line in t.read_text().splitlines():
            k, v = line.split()
            if k == "start":
                starts.append(float(v))
            elif k != "end":
                done[int(k)] = float(v)
    r["job_starts"] = starts
    r["ccd_done"] = done
    r["products"] = len(list(products.glob("*.cal.fits.fz")))
    return r


def analyse_seed(runs: list[dict], nccd: int) -> dict:
    ccds, exposures = [], []
    for r in runs:
        t0 = r["t0"]
        base = {"pack": r["t_tar"] - t0, "transfer": r["t_scp"] - r["t_tar"], "untar": r["t_untar"] - r["t_scp"]}
        first_start = min(r["job_starts"])
        for c, t in r["ccd_done"].items():
            ccds.append({"expid": r["expid"], "ccd": c, "total": t - t0})
        last = max(r["ccd_done"].values()) if r["ccd_done"] else float("nan")
        exposures.append({"expid": r["expid"], "total": last - t0, "ccds": len(r["ccd_done"]), "products": r["products"],
                          "stages": {**base, "queue": first_start - r["t_untar"], "calibrate": last - first_start}})
    return {"ccds": ccds, "exposures": exposures, "expected": nccd * len(runs)}


# --------------------------------------------------------------------------- report
def write_results(args, ours: dict, seed: dict | None, meta: dict) -> str:
    ex, cc = ours["exposures"], ours["ccds"]
    lines = [
        "# A night over the emulated WAN: latency from file complete to products", "",
        f"Run {meta.setdefault('date', f'{datetime.now(timezone.utc):%Y-%m-%d %H:%M}')} UTC: `sudo python "
        f"benchmarks/night.py {' '.join(a for a in sys.argv[1:] if a != '--reanalyse')}`",
        f"on this shared 2-core VM (the cluster's Slurm node is the same 2 cores, advertising 4 CPUs; the WAN "
        f"emulator's delay line also runs here, ~40% of a core at full rate). Link: `{meta['mode']}`, 300 ms RTT, "
        "200 Mbit/s (tests/infra/wan).", "",
        f"**Size:** {meta['n_cal']} calibration frames (biases + dome flats, every {args.cal_cadence:g} s at dusk), then "
        f"{meta['n_sci']} science exposures every **{args.cadence:g} s**, {meta['nccd']} CCDs each "
        f"({meta['mb_per_exp']:.0f} MB raw per exposure); `push --streams {args.streams}` (K={args.streams} parts, "
        f"{'transport.stream: one `dwfhpc receive` per stream' if getattr(args, 'stream', False) else 'rsync'}), "
        f"`ingest --array --executor slurm`. Wall time of our night: {meta['wall']:.0f} s; the seed's "
        f"{meta['n_seed']} exposures after it: {meta.get('seed_wall', 0):.0f} s.", "",
        f"Outcome: tasks by kind/state {ours['counts']}; {ours['parts']} parts, {ours['submissions']} array "
        f"submissions (one per part: nothing submitted twice), highest task attempt {ours['max_attempt']}, push "
        f"retries {ours['push_retries']}.", ""]
    t_ours = (min(e["written"] for e in ex), max(e["finished"] for e in ex))
    t_seed = meta.get("t_seed") or (t_ours[1], float("inf"))
    load = Path(meta.get("load_log", ""))
    lines += [f"Machine load (other work shares this VM): during our night {load_between(load, *t_ours)}; "
              f"during the seed's exposures {load_between(load, *t_seed)}. On 2 cores, a load of 2 is a full machine.", ""]
    lines += meta["cadence_lines"] + [""]
    lines += ["## Ours: per exposure (its last CCD), seconds", "",
              "| stage | p50 | p95 | max |", "|---|---:|---:|---:|"]
    for s in STAGES:
        v = [e["stages"].get(s) for e in ex]
        lines.append(f"| {STAGE_NAMES.get(s, s)} | {pct(v, 50):.1f} | {pct(v, 95):.1f} | {max([x for x in v if x is not None], default=float('nan')):.1f} |")
    tot = [e["total"] for e in ex]
    lines.append(f"| **total: file complete -> products** | **{pct(tot, 50):.1f}** | **{pct(tot, 95):.1f}** | **{max(tot):.1f}** |")
    lines += ["", "## Ours: per CCD, seconds", "", "| stage | p50 | p95 | max |", "|---|---:|---:|---:|"]
    for s in STAGES:
        v = [c["stages"].get(s) for c in cc]
        lines.append(f"| {STAGE_NAMES.get(s, s)} | {pct(v, 50):.1f} | {pct(v, 95):.1f} | {max([x for x in v if x is not None], default=float('nan')):.1f} |")
    tot = [c["total"] for c in cc]
    lines.append(f"| **total** | **{pct(tot, 50):.1f}** | **{pct(tot, 95):.1f}** | **{max(tot):.1f}** |")
    lines += ["", "Per exposure: " + ", ".join(f"{e['expid']} {e['total']:.0f} s" for e in ex), ""]
    if seed:
        se = seed["exposures"]
        lines += ["## The seed's path (same link, same cluster, same exposures, one at a time after our night)", "",
                  "One tarball of the raw exposure, one `scp` (new connection), untar on the shared FS, "
                  f"sbatch scripts of {SEED_CCDS_PER_JOB} CCDs each running `dwfhpc calibrate` per CCD with the "
                  "night's masters. Per exposure (its last CCD), seconds:", "",
                  "| stage | " + " | ".join(e["expid"] for e in se) + " |", "|---|" + "---:|" * len(se)]
        for s in SEED_STAGES:
            lines.append(f"| {s} | " + " | ".join(f"{e['stages'][s]:.1f}" for e in se) + " |")
        lines.append("| **total** | " + " | ".join(f"**{e['total']:.1f}**" for e in se) + " |")
        lines.append("| products | " + " | ".join(f"{e['products']}/{meta['nccd']}" for e in se) + " |")
        stot, sc = [e["total"] for e in se], [c["total"] for c in seed["ccds"]]
        otot = [e["total"] for e in ex]
        lines += ["", "| latency, seconds | ours p50 | ours p95 | seed p50 | seed p95 | seed / ours (p50) | "
                  "seed / ours (p95; target >= 3x) |",
                  "|---|---:|---:|---:|---:|---:|---:|",
                  f"| exposure (last CCD) | {pct(otot, 50):.1f} | {pct(otot, 95):.1f} | {pct(stot, 50):.1f} | "
                  f"{pct(stot, 95):.1f} | {pct(stot, 50) / pct(otot, 50):.2f}x | **{pct(stot, 95) / pct(otot, 95):.2f}x** |",
                  f"| CCD | {pct(tot, 50):.1f} | {pct(tot, 95):.1f} | {pct(sc, 50):.1f} | {pct(sc, 95):.1f} | "
                  f"{pct(sc, 50) / pct(tot, 50):.2f}x | **{pct(sc, 95) / pct(tot, 95):.2f}x** |", "",
                  "The seed ran each exposure alone on an idle machine (no cadence, nothing else queued), which "
                  "favours it; ours ran under the night's cadence with the calibration frames and every stage "
                  "sharing the same 2 cores."]
    lines += ["", "Notes: queue and start split at Slurm's StartTime (1 s resolution, from the job-completion log); "
              "'other' is what the stages do not explain (e.g. a part verified before the sender's move returned "
              "makes inbox negative, node code outside the timed steps). Raw figures: `night.json`.", ""]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "ours": ours, "seed": seed}, indent=1, default=str))
    return text


def cadence_lines(ours: dict, args) -> list[str]:
    ex = ours["exposures"]
    if len(ex) < 2:
        return []
    written = sorted(e["written"] for e in ex)
    finished = sorted(e["finished"] for e in ex)
    period = (finished[-1] - finished[0]) / (len(finished) - 1)
    trend = ex[-1]["total"] - ex[0]["total"]
    return [f"Cadence: exposures written every {np.mean(np.diff(written)):.0f} s; products of successive exposures "
            f"completed every {period:.0f} s on average; latency of the last exposure minus the first: {trend:+.0f} s "
            f"({'sustained: the backlog does not grow' if trend < args.cadence / 2 else 'NOT sustained: a backlog builds up'}). "
            "The survey's cadence is one exposure per 60 s.",
            "",
            f"Capacity: products of successive {ex[0]['ccds']}-CCD exposures came out every {period:.0f} s while the "
            f"telescope wrote one every {np.mean(np.diff(written)):.0f} s; per exposure, packing took p50 "
            f"{pct([e['pack_busy'] for e in ex], 50):.0f} s and sending p50 {pct([e['send_busy'] for e in ex], 50):.0f} s "
            f"(link-bound). So this VM sustains about one {ex[0]['ccds']}-CCD exposure per {period:.0f} s, i.e. "
            f"~{period * 62 / ex[0]['ccds']:.0f} s for a full 62-CCD exposure (linear estimate; telescope, link "
            "emulator and cluster share its 2 cores)."]


def reanalyse(args) -> int:
    work = args.work.resolve()
    prev = json.loads(args.out.with_suffix(".json").read_text())
    log = work / "telescope" / "written.json"
    written = (json.loads(log.read_text()) if log.exists()
               else {e["expid"]: e["written"] for e in prev["ours"]["exposures"]})
    run = {"written": written, "state": work / "cluster" / "state.sqlite",
           "journal": work / "telescope" / "push-journal.sqlite", "wall": prev["meta"]["wall"]}
    ours = analyse_ours(run, {"SLURM_CONF": os.environ.get("SLURM_CONF", "/tmp/dwf-slurm/slurm.conf")})
    meta = prev["meta"]
    meta.setdefault("load_log", str(work / "load.txt"))
    meta["cadence_lines"] = cadence_lines(ours, args)
    print(write_results(args, ours, prev["seed"], meta))
    return 0


# --------------------------------------------------------------------------- the fault campaign (--faults)
FAULTS = ("link-cut", "push-kill", "ingest-kill", "slurmd-stop", "scancel", "scratch-full", "byte-flip",
          "truncated-raw", "duplicate-part")
FAULT_TITLES = {
    "link-cut": "(1) link cut {cut:g} s", "push-kill": "(2) `kill -9` push mid-transfer, restart",
    "ingest-kill": "(3) `kill -9` ingest, restart", "slurmd-stop": "(4) slurmd stopped {slurmd:g} s",
    "scancel": "(5) `scancel` of a running task", "scratch-full": "(6) node scratch full {scratch:g} s",
    "byte-flip": "(7) one byte flipped in a delivered part", "truncated-raw": "(8) truncated raw file at the telescope",
    "duplicate-part": "(9) the same part delivered twice"}
#: when each fault is injected, seconds after the first science exposure is written (at the earliest:
#: each also waits for the previous one to end plus ``FAULT_GAP``, and for its own trigger condition)
FAULT_AT = {"link-cut": 10, "push-kill": 60, "ingest-kill": 90, "slurmd-stop": 120, "scancel": 165,
            "scratch-full": 190, "byte-flip": 235, "truncated-raw": 265, "duplicate-part": 290}
FAULT_GAP = 10
FAULT_PORTS = {"CTLD_PORT": "7837", "SLURMD_PORT": "7838", "DBD_PORT": "7839", "DB_PORT": "3437"}


def rel(t: float | None, t0: float) -> str:
    return "never" if t is None else f"+{t - t0:.0f} s"


def short(text: str | None, n: int = 150) -> str:
    text = " ".join(str(text or "").split()).replace("|", "/")
    return text if len(text) <= n else text[: n - 1] + "…"


class PrivateSlurm:
    """The fault campaign's own Slurm (``tests/infra/start-slurm.sh`` with its own prefix and ports).

    Its own, because the campaign stops its slurmd: the shared ``/tmp/dwf-slurm`` of the other
    engineers' runs is never touched. Started and stopped by pid file, as start/stop-slurm.sh do.
    """

    def __init__(self, prefix: Path):
        self.prefix = Path(prefix)
        self.env = {"SLURM_CONF": str(self.prefix / "slurm.conf")}
        self._script_env = {**os.environ, "SLURM_PREFIX": str(self.prefix), "WITH_DBD": "0", **FAULT_PORTS}

    def start(self) -> None:
        """start-slurm.sh: starts only what is not running (so also: slurmd again after a stop)."""
        proc = subprocess.run(["bash", str(REPO / "tests" / "infra" / "start-slurm.sh")], capture_output=True,
                              text=True, env=self._script_env, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"start-slurm.sh failed: {proc.stderr.strip()[-400:]}")

    def slurmd_pid(self) -> int | None:
        f = self.prefix / "var" / "run" / "slurmd.pid"
        try:
            pid = int(f.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def stop_slurmd(self) -> str:
        """SIGTERM to our slurmd (its pid file), SIGKILL if it is still there after 15 s."""
        pid = self.slurmd_pid()
        if pid is None:
            return "slurmd was not running"
        os.kill(pid, signal.SIGTERM)
        for _ in range(150):
            try:
                os.kill(pid, 0)
            except OSError:
                return f"slurmd {pid} stopped (SIGTERM)"
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        return f"slurmd {pid} killed (SIGKILL after 15 s)"

    def squeue(self) -> list[dict]:
        proc = subprocess.run(["squeue", "-h", "-o", "%i|%T|%r|%j"], env={**os.environ, **self.env},
                              capture_output=True, text=True, timeout=30)
        out = []
        for line in proc.stdout.splitlines():
            f = line.split("|")
            if len(f) == 4:
                out.append({"id": f[0], "state": f[1], "reason": f[2], "name": f[3]})
        return out

    def stop(self) -> None:
        """Cancel whatever is left in this private cluster, then stop its daemons (stop-slurm.sh)."""
        subprocess.run(["scancel", "--user", "root"], env={**os.environ, **self.env}, capture_output=True, timeout=30)
        time.sleep(1)
        subprocess.run(["bash", str(REPO / "tests" / "infra" / "stop-slurm.sh")], env=self._script_env,
                       capture_output=True, timeout=120)


class Campaign:
    """Runs the night (push, ingest, telescope) and injects the faults one after the other."""

    def __init__(self, args, work: Path, wan: wanlink.Wan, slurm: PrivateSlurm, files, nccd: int, scratch: Path,
                 truncate: str):
        self.args, self.work, self.wan, self.slurm, self.files, self.nccd = args, work, wan, slurm, files, nccd
        self.scratch, self.truncate = scratch, truncate
        c = work / "cluster"
        self.raw, self.staging, self.inbox = work / "telescope" / "raw", c / "staging", c / "inbox"
        self.state, self.journal, self.specs = c / "state.sqlite", work / "telescope" / "push-journal.sqlite", c / "specs"
        self.site = work / "site.yaml"
        self.procs: dict[str, subprocess.Popen] = {}
        self.runs = {"push": 0, "ingest": 0}
        self.plock = threading.Lock()
        self.killed: set[int] = set()
        self.unexpected: list[dict] = []
        self.records: dict[str, dict] = {}
        self.results: dict[tuple, dict] = {}  # (result file, mtime_ns) -> what it said: every result ever seen
        self.squeue_log: list[tuple[float, list[dict]]] = []
        self.t_ref: float | None = None
        self.stop = threading.Event()
        self.sci_expids = {p.name.split(".")[0] for p, k in files if k == "science"}

    # ------------------------------------------------------------ processes
    def start(self, name: str) -> subprocess.Popen:
        with self.plock:
            self.runs[name] += 1
            log = (self.work / f"{name}-{self.runs[name]}.log").open("w")
            if name == "ingest":
                argv, e = dwfhpc("ingest", "--config", str(self.site), "--array", "--executor", "slurm",
                                 "--no-report"), env(self.slurm.env)
            else:
                argv, e = self.wan.in_client(dwfhpc("push", "--config", str(self.site), "--streams",
                                                    str(self.args.streams), "--no-live")), env()
            p = self.procs[name] = subprocess.Popen(argv, env=e, stdout=log, stderr=subprocess.STDOUT)
            say(f"{name} started (run {self.runs[name]}, pid {p.pid})")
            return p

    def kill9(self, name: str) -> int:
        with self.plock:
            p = self.procs[name]
            self.killed.add(p.pid)
            cmd = Path(f"/proc/{p.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "dwfhpc" not in cmd:  # `ip netns exec` execs the command: the pid must be dwfhpc's own
                raise RuntimeError(f"pid {p.pid} is not dwfhpc's ({cmd!r})")
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
            say(f"{name} (pid {p.pid}) killed with SIGKILL")
            return p.pid

    def supervise(self) -> None:
        """A supervisor's job: a push or ingest that died without being killed here is recorded and restarted."""
        for name in ("push", "ingest"):
            p = self.procs.get(name)
            if p is not None and p.poll() is not None and p.pid not in self.killed:
                self.unexpected.append({"t": time.time(), "name": name, "run": self.runs[name], "rc": p.returncode})
                say(f"UNEXPECTED: {name} exited with {p.returncode} (see {name}-{self.runs[name]}.log); restarting")
                self.killed.add(p.pid)
                self.start(name)

    def terminate(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()

    # ------------------------------------------------------------ observation
    def sweep(self) -> None:
        """Every node result file seen so far (a retry of the same spec name replaces the file)."""
        for f in self.specs.glob("*.result-*.json") if self.specs.is_dir() else ():
            try:
                key = (str(f), f.stat().st_mtime_ns)
                if key in self.results:
                    continue
                r = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            self.results[key] = {"file": f.name, "expid": r.get("expid"), "ccd": r.get("ccd"), "status": r.get("status"),
                                 "error": r.get("error"), "error_kind": r.get("error_kind"), "attempt": r.get("attempt"),
                                 "started": r.get("started"), "finished": r.get("finished"),
                                 "interrupted": r.get("interrupted"), "products": bool(r.get("products"))}

    def observe(self) -> None:
        while not self.stop.is_set():
            self.sweep()
            try:
                q = self.slurm.squeue()
                if not self.squeue_log or self.squeue_log[-1][1] != q:
                    self.squeue_log.append((time.time(), q))
            except (OSError, subprocess.SubprocessError):
                pass
            self.stop.wait(2)

    def q(self, db: Path, sql: str, args: tuple = ()) -> list[dict]:
        return [dict(r) for r in wanlink.query(db, sql, args)]

    def wait_for(self, fn, timeout: float, every: float = 0.1):
        deadline = time.time() + timeout
        while time.time() < deadline and not self.stop.is_set():
            v = fn()
            if v:
                return v
            time.sleep(every)
        return None

    def active_tasks(self) -> list[dict]:
        return self.q(self.state, "SELECT part, ccd, expid, state, attempt, job_id FROM tasks "
                                  "WHERE state IN ('queued','submitted','running')")

    # ------------------------------------------------------------ the faults
    def f_link_cut(self) -> dict:
        sending = self.wait_for(lambda: self.q(self.journal, "SELECT expid, k FROM parts WHERE state='sending'"), 60)
        time.sleep(0.5)
        if not wanlink.intact(self.wan):  # never cut a link that is not ours
            raise RuntimeError("the WAN is not ours any more")
        t_down, t_up = self.wan.cut(self.args.cut_seconds)
        return {"t0": t_down, "t1": t_up, "sending": [f"{r['expid']}.p{r['k']}" for r in sending or []]}

    def f_push_kill(self) -> dict:
        sending = self.wait_for(lambda: self.q(self.journal, "SELECT expid, k, t_send_start FROM parts WHERE "
                                               "state='sending' AND t_send_start < ?", (time.time() - 0.3,)), 60)
        undelivered = self.q(self.journal, "SELECT expid, state FROM exposures WHERE state NOT IN ('delivered','failed')")
        t = time.time()
        pid = self.kill9("push")
        time.sleep(self.args.restart_after)
        t1 = time.time()
        self.start("push")
        return {"t0": t, "t1": t1, "pid": pid, "run_after": self.runs["push"], "undelivered": undelivered,
                "sending": [{"expid": r["expid"], "k": r["k"]} for r in sending or []]}

    def f_ingest_kill(self) -> dict:
        active = self.wait_for(lambda: [r for r in self.active_tasks() if r["state"] in ("submitted", "running")], 60)
        inbox = sorted(p.name for p in self.inbox.glob("*.manifest.json"))
        t = time.time()
        pid = self.kill9("ingest")
        time.sleep(self.args.restart_after)
        t1 = time.time()
        self.start("ingest")
        return {"t0": t, "t1": t1, "pid": pid, "active": active or [], "inbox": inbox}

    def f_slurmd_stop(self) -> dict:
        self.wait_for(self.active_tasks, 30)
        active = self.active_tasks()
        t = time.time()
        how = self.slurm.stop_slurmd()
        say(f"fault: {how}")
        time.sleep(max(0.0, self.args.slurmd_seconds - (time.time() - t)))
        t1 = time.time()
        self.slurm.start()
        say(f"fault: slurmd started again by start-slurm.sh ({time.time() - t1:.1f} s)")
        return {"t0": t, "t1": t1, "t_up": time.time(), "how": how, "active": active}

    def f_scancel(self) -> dict:
        def running():
            return [r for r in self.slurm.squeue() if r["state"] == "RUNNING" and r["name"].startswith("dwf-")]
        rows = self.wait_for(running, 90, every=0.5)
        if not rows:
            return {"t0": time.time(), "t1": time.time(), "error": "no task was running within 90 s"}
        time.sleep(0.5)
        jid = rows[0]["id"]
        t = time.time()
        proc = subprocess.run(["scancel", jid], env={**os.environ, **self.slurm.env}, capture_output=True, text=True)
        task = self.q(self.state, "SELECT part, ccd, expid, attempt FROM tasks WHERE job_id=?", (jid,))
        say(f"fault: scancel {jid} -> {proc.returncode} {task}")
        return {"t0": t, "t1": t, "job": jid, "name": rows[0]["name"], "rc": proc.returncode,
                "task": task[0] if task else None}

    def f_scratch_full(self) -> dict:
        free = shutil.disk_usage(self.scratch).free
        fill = self.scratch / "fill.bin"
        size = max(0, free - int(self.args.scratch_leave_mb * 1e6))
        t = time.time()
        with open(fill, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, size)
        left = shutil.disk_usage(self.scratch).free
        say(f"fault: scratch {self.scratch} filled ({left / 1e6:.0f} MB left)")
        time.sleep(max(0.0, self.args.scratch_seconds - (time.time() - t)))
        fill.unlink()
        t1 = time.time()
        say(f"fault: scratch freed ({shutil.disk_usage(self.scratch).free / 1e6:.0f} MB free)")
        return {"t0": t, "t1": t1, "free_before": free, "free_during": left}

    def f_byte_flip(self) -> dict:
        deadline = time.time() + 120
        while time.time() < deadline and not self.stop.is_set():
            try:
                entries = list(os.scandir(self.staging))
            except FileNotFoundError:
                entries = []
            for e in entries:
                if e.name.startswith(".") or not e.name.endswith(".tar") or e.name.split(".")[0] not in self.sci_expids:
                    continue
                try:
                    with open(e.path, "r+b") as f:
                        size = os.fstat(f.fileno()).st_size
                        off = size // 2
                        f.seek(off)
                        b = f.read(1)
                        f.seek(off)
                        f.write(bytes([b[0] ^ 0xFF]))
                        f.flush()
                        os.fsync(f.fileno())
                except (FileNotFoundError, IndexError):
                    continue
                t = time.time()
                moved = not Path(e.path).exists()
                say(f"fault: flipped byte {off} of {e.name} in staging" + (" (already moved to the inbox)" if moved else ""))
                return {"t0": t, "t1": t, "stem": e.name[:-4], "offset": off, "size": size, "moved_meanwhile": moved}
            time.sleep(0.003)
        return {"t0": time.time(), "t1": time.time(), "error": "no science part seen in staging within 120 s"}

    def f_truncated_raw(self) -> dict:
        expid = self.truncate.split(".")[0]
        w = self.wait_for(lambda: self.tel.written.get(expid), 600, every=0.5)
        return {"t0": w or time.time(), "t1": w or time.time(), "name": self.truncate, "expid": expid}

    def f_duplicate_part(self) -> dict:
        rows = self.wait_for(lambda: self.q(self.state, "SELECT stem, tar, manifest FROM parts WHERE kind='science' "
                                                        "AND state='done' ORDER BY t_done DESC LIMIT 1"), 120, every=1)
        if not rows:
            return {"t0": time.time(), "t1": time.time(), "error": "no science part was done"}
        r = rows[0]
        t = time.time()
        for src in (Path(r["tar"]), Path(r["manifest"])):  # tarball first, manifest last, as push delivers
            tmp = self.inbox / f".{src.name}.copy"
            shutil.copyfile(src, tmp)
            os.replace(tmp, self.inbox / src.name)
        say(f"fault: {r['stem']} copied into the inbox again")
        return {"t0": t, "t1": time.time(), "stem": r["stem"]}

    def run_faults(self) -> None:
        t_prev = 0.0
        for name in self.args.fault_list:
            at = self.t_ref + FAULT_AT[name] * self.args.fault_scale
            if name != "truncated-raw":
                at = max(at, t_prev + FAULT_GAP)
            if self.stop.wait(max(0.0, at - time.time())):
                return
            say(f"fault {name}: injecting")
            try:
                rec = getattr(self, "f_" + name.replace("-", "_"))()
            except Exception as exc:  # noqa: BLE001 - recorded, the campaign goes on
                rec = {"t0": time.time(), "t1": time.time(), "error": f"{type(exc).__name__}: {exc}"}
                say(f"fault {name}: ERROR {rec['error']}")
            self.records[name] = rec
            t_prev = rec.get("t1", time.time())

    # ------------------------------------------------------------ the night
    def quiet(self) -> bool:
        """Nothing left to do: every written file settled in the journal, every exposure delivered or failed,
        the inbox empty, no task waiting or in flight."""
        files = self.q(self.journal, "SELECT state FROM files")
        if len([f for f in files if f["state"] in ("complete", "failed")]) < len(self.files):
            return False
        if self.q(self.journal, "SELECT expid FROM exposures WHERE state NOT IN ('delivered','failed')"):
            return False
        if any(self.inbox.glob("*.manifest.json")) or self.active_tasks():
            return False
        return True

    def run(self) -> dict:
        self.tel = Telescope(self.files, self.raw, self.args.cal_cadence, self.args.cadence,
                             truncate={self.truncate})
        n_cal = sum(1 for _, k in self.files if k != "science")
        self.start("ingest")
        self.start("push")
        t0 = time.time()
        self.tel.start()
        # the first science exposure is written n_cal cal-cadences after the first file
        self.t_ref = t0 + n_cal * self.args.cal_cadence
        observer = threading.Thread(target=self.observe, name="observer", daemon=True)
        observer.start()
        faults = threading.Thread(target=self.run_faults, name="faults", daemon=True)
        faults.start()
        last, quiet_since, t_end = 0.0, None, None
        try:
            while True:
                if not wanlink.intact(self.wan):  # another run's setup-wan.sh tore ours down: the night is void
                    raise SystemExit("night.py: error: the emulated WAN was torn down by another run mid-night "
                                     f"(our sshd is gone; namespaces now hold: {'; '.join(wanlink.busy()[:3])})")
                self.supervise()
                if self.tel.error:
                    raise SystemExit(f"night.py: error: telescope: {self.tel.error}")
                if not self.tel.is_alive() and not faults.is_alive():
                    t_end = t_end or time.time()
                    if self.quiet():
                        quiet_since = quiet_since or time.time()
                        if time.time() - quiet_since >= 10:
                            break
                    else:
                        quiet_since = None
                    if time.time() - t_end > self.args.drain_timeout:
                        say(f"drain timeout: still not quiet {self.args.drain_timeout:.0f} s after the last fault")
                        break
                if time.time() - t0 > self.args.timeout:
                    say(f"timed out after {self.args.timeout:.0f} s")
                    break
                if time.time() - last > 30:
                    counts = {r["state"]: r["n"] for r in wanlink.query(self.state, "SELECT state, count(*) n FROM tasks GROUP BY state")}
                    say(f"tasks {counts}; load {Path('/proc/loadavg').read_text().split()[0]}")
                    last = time.time()
                time.sleep(1)
            self.drained = quiet_since is not None and time.time() - quiet_since >= 10
            self.t_quiet = time.time()
            self.squeue_log.append((time.time(), self.slurm.squeue()))
            self.sweep()
            # the night's evidence, before any operator's step: copies of both databases, the results, the products
            self.ev_night = Evidence(self, snapshot(self.state, self.work / "night-state.sqlite"),
                                     snapshot(self.journal, self.work / "night-journal.sqlite"), dict(self.results))
            self.ev_night_results = dict(self.results)
            if self.args.reconcile:
                self.reconcile()
        finally:
            self.stop.set()
            self.tel.stop.set()
            self.terminate()
        self.sweep()
        (self.work / "telescope" / "written.json").write_text(json.dumps(self.tel.written))
        return {"wall": time.time() - t0, "t0": t0}

    def reconcile(self) -> None:
        """What an operator would do next (not counted as automatic recovery): stop the continuous push and run
        ``push --once --mode end-of-night`` (the receiver's inbox and parts store are listed; parts missing are
        sent again), then let ingest take what came."""
        say("after the night: an operator's end-of-night reconcile (push --once --mode end-of-night)")
        p = self.procs["push"]
        self.killed.add(p.pid)
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
        t = time.time()
        log = self.work / "push-reconcile.log"
        argv = self.wan.in_client(dwfhpc("push", "--config", str(self.site), "--streams", str(self.args.streams),
                                         "--no-live", "--once", "--mode", "end-of-night"))
        with log.open("w") as f:
            try:
                rc = subprocess.run(argv, env=env(), stdout=f, stderr=subprocess.STDOUT, timeout=300).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        t1 = time.time()
        time.sleep(5)
        self.wait_for(self.quiet, 180, every=2)
        self.reconciled = {"t0": t, "t1": t1, "rc": rc, "t_quiet": time.time(), "log": log.name}
        say(f"reconcile: push exited {rc} after {t1 - t:.0f} s")


# --------------------------------------------------------------------------- fault campaign: analysis
def snapshot(db: Path, dest: Path) -> Path:
    """A consistent copy of a live SQLite database (read-only source, SQLite's backup API)."""
    dest.unlink(missing_ok=True)
    src, dst = wanlink.ro(db), sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return dest


class Evidence:
    """Read-only views of the journal, the state DB, the result files, the products and the logs at one moment."""

    def __init__(self, camp: Campaign, state: Path, journal: Path, results: dict):
        c = camp
        self.c = c
        q = c.q
        self.jexp = {r["expid"]: r for r in q(journal, "SELECT * FROM exposures")}
        self.jparts = q(journal, "SELECT * FROM parts")
        self.jfiles = q(journal, "SELECT * FROM files")
        self.jevents = q(journal, "SELECT * FROM events ORDER BY t")
        self.sparts = {r["stem"]: r for r in q(state, "SELECT * FROM parts")}
        self.tasks = q(state, "SELECT * FROM tasks")
        self.subs = q(state, "SELECT * FROM submissions ORDER BY id")
        self.sevents = q(state, "SELECT * FROM events ORDER BY t")
        self.results = sorted(results.values(), key=lambda r: r.get("finished") or 0)
        self.written = dict(c.tel.written)
        self.kind = {p.name.split(".")[0]: k for p, k in c.files}
        prod = c.work / "cluster" / "products"
        self.products: dict[str, int] = {}
        self.stray = sorted(str(p.relative_to(prod)) for p in prod.rglob(".*")) if prod.is_dir() else []
        for p in prod.rglob("*.cal.fits.fz") if prod.is_dir() else ():
            self.products[p.parent.name] = self.products.get(p.parent.name, 0) + 1
        # calibrations that ended with products, per CCD: distinct (result file, start) pairs with status ok
        self.ok: dict[tuple[str, int], list[dict]] = {}
        for r in self.results:
            if r["status"] == "ok" and r["products"]:
                self.ok.setdefault((r["expid"], r["ccd"]), []).append(r)
        self.twice = {k: v for k, v in self.ok.items() if len({(x["file"], x["started"]) for x in v}) > 1}
        # submissions per (part, ccd, attempt): from the spec each array ran
        self.submitted: dict[tuple[str, int, int], list[dict]] = {}
        for s in self.subs:
            try:
                spec = json.loads(Path(s["spec"]).read_text())
            except (OSError, ValueError):
                continue
            for ccd in spec.get("ccds", []):
                self.submitted.setdefault((s["part"], ccd, spec.get("attempt", 1)), []).append(s)
        self.sub_twice = {k: v for k, v in self.submitted.items() if len(v) > 1}
        done: dict[str, int] = {}
        for t in self.tasks:
            if t["state"] == "done":
                done[t["expid"]] = done.get(t["expid"], 0) + 1
        self.done = done
        self.sci_done = sum(1 for t in self.tasks if t["state"] == "done" and t["kind"] == "science")
        self.whole = {e for e in self.written if done.get(e, 0) >= c.nccd}
        self.lost = sorted(e for e in self.written if e not in self.whole)

    def task(self, part: str, ccd: int) -> dict | None:
        return next((t for t in self.tasks if t["part"] == part and t["ccd"] == ccd), None)

    def sev(self, t0: float, t1: float, like: str | None = None, part: str | None = None) -> list[dict]:
        return [e for e in self.sevents if t0 <= e["t"] <= t1 and (like is None or like.lower() in e["message"].lower())
                and (part is None or (e["part"] or "").startswith(part))]

    def jev(self, t0: float, t1: float, like: str | None = None) -> list[dict]:
        return [e for e in self.jevents if t0 <= e["t"] <= t1 and (like is None or like.lower() in e["message"].lower())]

    def push_log(self, run: int, event: str) -> list[str]:
        f = self.c.work / f"push-{run}.log"
        return [ln for ln in f.read_text(errors="replace").splitlines() if f"event={event}" in ln] if f.exists() else []

    def lost_of(self, expids) -> list[str]:
        return sorted(e for e in set(expids) if e in self.written and e not in self.whole)

    def twice_of(self, expids) -> list[str]:
        return sorted(f"{e}/{c}" for (e, c) in self.twice if e in set(expids))


def analyse_fault(name: str, rec: dict, ev: Evidence, camp: Campaign, t_next: float = float("inf")) -> dict:
    """One row of the table. Event windows end where the next fault begins (``t_next``)."""
    t_ref, a = camp.t_ref, camp.args
    row = {"fault": FAULT_TITLES[name].format(cut=a.cut_seconds, slurmd=a.slurmd_seconds, scratch=a.scratch_seconds),
           "name": name, "when": rel(rec.get("t0"), t_ref), "detected": "", "recovered": "", "lost": [], "twice": [],
           "ttr": "", "ok": False, "notes": []}
    if rec.get("error"):
        row.update(detected="(not injected)", recovered=rec["error"], ttr="n/a")
        return row
    t0, t1 = rec["t0"], rec["t1"]
    affected: set[str] = set()
    if name == "link-cut":
        row["when"] += f" (while {', '.join(rec['sending']) or 'nothing'} on the wire)"
        parts = [p for p in ev.jparts if (p["t_packed"] or 0) <= t1 and (p["t_confirmed"] is None or p["t_confirmed"] >= t0)]
        affected = {p["expid"] for p in parts}
        retries = ev.jev(t0, min(t1 + 120, t_next), "retry")
        if retries:
            row["detected"] = (f"push journal: {len(retries)} `retry` warnings from {rel(retries[0]['t'], t_ref)} "
                               f"(first: \"{short(retries[0]['message'], 130)}\")")
        else:
            row["detected"] = "nothing: no retry in the push journal (the transfers stalled and resumed: TCP held)"
        conf = [p["t_confirmed"] for p in parts if p["t_confirmed"]]
        row["recovered"] = (f"push's stream retries (backoff): the {len(parts)} parts caught in the cut all confirmed, "
                            f"up to {max((p['attempts'] for p in parts), default=0)} attempts"
                            if len(conf) == len(parts) else f"{len(parts) - len(conf)} of {len(parts)} parts never confirmed")
        row["ttr"] = (f"{max(conf) - t1:.0f} s after the link came back ({max(conf) - t0:.0f} s after the cut)"
                      if conf else "never")
        row["ok"] = len(conf) == len(parts)
    elif name == "push-kill":
        sending = {(s["expid"], s["k"]) for s in rec["sending"]}
        row["when"] += f" (mid-transfer: {', '.join(f'{e}.p{k}' for e, k in sorted(sending)) or 'nothing sending'})"
        parts = [p for p in ev.jparts if (p["expid"], p["k"]) in sending]
        affected = {e for e, _ in sending} | {r["expid"] for r in rec["undelivered"]}
        resume = ev.push_log(rec["run_after"], "resume")
        dups = ev.sev(t0, min(t1 + 180, t_next), "delivered again")
        row["detected"] = (f"the restarted push's recovery from the journal (parts left `sending`): "
                           f"{len(resume)} `event=resume` lines (" + short("; ".join(l.split('event=resume', 1)[1].strip()
                                                                                    for l in resume), 120) + ")")
        conf = [p["t_confirmed"] for p in parts if p["t_confirmed"]]
        row["recovered"] = (f"restart by the supervisor (the harness, after {a.restart_after:g} s); the interrupted parts "
                            f"sent again and confirmed (attempts {', '.join(str(p['attempts']) for p in parts)}); "
                            f"ingest: {len(dups)} duplicate deliveries dropped (same sha256)")
        row["ttr"] = f"{max(conf) - t0:.0f} s (kill to the interrupted parts confirmed)" if conf and len(conf) == len(parts) else "never"
        row["ok"] = bool(parts) and len(conf) == len(parts)
    elif name == "ingest-kill":
        act = rec["active"]
        row["when"] += f" ({len(act)} tasks in flight, {len(rec['inbox'])} parts in the inbox)"
        affected = {r["expid"] for r in act}
        after = [ev.task(r["part"], r["ccd"]) for r in act]
        same_job = [r for r, t in zip(act, after) if t and t["state"] == "done" and t["job_id"] == r["job_id"]
                    and t["attempt"] == r["attempt"]]
        fin = [t["t_finished"] for t in after if t and t["t_finished"]]
        first = next((e for e in ev.sevents if e["t"] >= t1), None)
        row["detected"] = ("nothing inside dwfhpc (a dead ingest is a supervisor's to see: the harness restarted it "
                           f"after {a.restart_after:g} s); the new ingest's first state-DB event at {rel(first['t'], t_ref) if first else 'never'}"
                           + (f": \"{short(first['message'], 90)}\"" if first else ""))
        row["recovered"] = (f"restart: {len(same_job)} of {len(act)} tasks in flight re-attached and finished under their "
                            f"original job ids (same attempt); final states "
                            + ", ".join(f"{s}: {n}" for s, n in _count(t['state'] if t else 'missing' for t in after).items()))
        row["ttr"] = (f"{first['t'] - t0:.0f} s (kill to the new ingest's first action; restart after "
                      f"{a.restart_after:g} s)" if first else "never")
        if fin:
            row["notes"].append(f"the {len(act)} tasks in flight finished on the nodes at {', '.join(rel(t, t_ref) for t in fin)} "
                                f"(ingest killed at {rel(t0, t_ref)}); the new ingest collected them from their result files")
        row["ok"] = len(same_job) == len(act) and bool(act) and first is not None
    elif name == "slurmd-stop":
        act = rec["active"]
        row["when"] += f" ({len(act)} tasks queued or in flight; {rec['how']})"
        subs = [s for s in ev.subs if t0 - 1 <= (s["t_submitted"] or 0) <= rec["t_up"] + 5]
        touched = {(r["part"], r["ccd"]) for r in act}
        for s in subs:
            try:
                for ccd in json.loads(Path(s["spec"]).read_text()).get("ccds", []):
                    touched.add((s["part"], ccd))
            except (OSError, ValueError):
                pass
        tasks = [ev.task(p, c) for p, c in sorted(touched)]
        affected = {t["expid"] for t in tasks if t}
        reasons = sorted({f"{r['state']}/{r['reason']}" for ts, q in camp.squeue_log if t0 <= ts <= min(rec["t_up"] + 120, t_next)
                          for r in q if r["name"].startswith("dwf-") and r["reason"] not in ("None", "")})
        evs = ev.sev(t0, min(rec["t_up"] + 120, t_next))
        warn = [e for e in evs if e["level"] in ("warning", "error")]
        requeued = slurmctld_lines(camp.slurm.prefix, t0, min(rec["t_up"] + 60, t_next), "requeue")
        if requeued:
            row["notes"].append(f"slurmctld.log: {len(requeued)} lines of requeue in the window, e.g. "
                                + "; ".join(short(x, 90) for x in requeued[:2]))
        row["detected"] = ((f"state DB: {len(warn)} warnings/errors (first: \"{short(warn[0]['message'], 110)}\")"
                            if warn else "state DB: no warning or error (dwfhpc saw nothing)") +
                           (f"; Slurm: {len(requeued)} requeue lines in slurmctld.log (launch on the stopped slurmd failed)"
                            if requeued else "") +
                           (f"; Slurm queue reasons seen: {', '.join(reasons)}" if reasons else "; Slurm showed no pending reason"))
        fin = [t["t_finished"] for t in tasks if t and t["t_finished"]]
        during = [r for r in ev.results if t0 <= (r["finished"] or 0) <= t1]
        started = [r["started"] for r in ev.results if (r["started"] or 0) > t0]
        row["notes"].append(f"{len(during)} tasks finished while slurmd was down (their slurmstepd kept running); "
                            f"first task start after the stop: {rel(min(started), t_ref) if started else 'never'} "
                            f"(slurmd back at {rel(rec['t_up'], t_ref)})")
        row["recovered"] = (f"slurmd started again (start-slurm.sh, {rec['t_up'] - t1:.0f} s); the {len(tasks)} tasks "
                            f"queued/in flight/submitted around it: " +
                            ", ".join(f"{s}: {n}" for s, n in _count(t['state'] if t else 'missing' for t in tasks).items())
                            + f", highest attempt {max((t['attempt'] for t in tasks if t), default=0)}")
        row["ttr"] = (f"{max(fin) - rec['t_up']:.0f} s after slurmd was back ({max(fin) - t0:.0f} s after the stop)"
                      if fin and len(fin) == len(tasks) else "never")
        row["ok"] = all(t and t["state"] == "done" for t in tasks)
    elif name == "scancel":
        tk = rec.get("task") or {}
        row["when"] += f" (`scancel {rec['job']}` = {tk.get('part')} CCD {tk.get('ccd')}, attempt {tk.get('attempt')})"
        affected = {tk.get("expid")} if tk else set()
        t = ev.task(tk.get("part"), tk.get("ccd")) if tk else None
        evs = [e for e in ev.sev(t0, t0 + 600, part=tk.get("part")) if f"CCD {tk.get('ccd')}" in e["message"]]
        res = [r for r in ev.results if r["expid"] == tk.get("expid") and r["ccd"] == tk.get("ccd")]
        row["detected"] = (f"state DB event {rel(evs[0]['t'], t_ref)}: \"{short(evs[0]['message'], 140)}\"" if evs else
                           "no state DB event about this CCD")
        seen = {r["attempt"] for r in res}
        missing = [f"a{i} none (killed before the node code wrote one)" for i in range(1, (t["attempt"] if t else 0) + 1)
                   if i not in seen]
        row["recovered"] = (f"collector retry: task {t['state']} at attempt {t['attempt']}; node results: " +
                            "; ".join(missing + [f"a{r['attempt']} {r['status']}" + (f" ({short(r['error'], 60)})" if r["error"] else "")
                                                 for r in res]) if t else "task not found")
        row["ttr"] = f"{t['t_finished'] - t0:.0f} s (scancel to the CCD's products)" if t and t["state"] == "done" else "never"
        row["ok"] = bool(t and t["state"] == "done")
    elif name == "scratch-full":
        row["when"] += (f" ({rec['free_before'] / 1e6:.0f} MB free -> {rec['free_during'] / 1e6:.0f} MB, min_free_gb "
                        f"{a.scratch_min_free_gb:g}, freed after {t1 - t0:.0f} s)")
        hit = [r for r in ev.results if r["error"] and "scratch" in r["error"].lower() and t0 - 5 <= (r["finished"] or 0) <= t1 + 30]
        ccds = sorted({(r["expid"], r["ccd"]) for r in hit})
        tasks = [next((t for t in ev.tasks if t["expid"] == e and t["ccd"] == c), None) for e, c in ccds]
        affected = {e for e, _ in ccds}
        evs = ev.sev(t0, min(t1 + 120, t_next), "scratch")
        row["detected"] = (f"node result -> state DB: {len(hit)} failed attempts on {len(ccds)} CCDs, event "
                           f"\"{short(evs[0]['message'], 150)}\"" if evs else
                           f"{len(hit)} failed attempts; no state DB event naming the scratch")
        fin = [t["t_finished"] for t in tasks if t and t["state"] == "done"]
        row["recovered"] = ("collector retries (immediately, attempt budget " + f"{camp.args.max_attempts}): " +
                            ", ".join(f"{s}: {n}" for s, n in _count(t['state'] if t else 'missing' for t in tasks).items())
                            + f", attempts {sorted(t['attempt'] for t in tasks if t)}") if ccds else "nothing to recover (no task hit it)"
        row["ttr"] = (f"{max(fin) - t1:.0f} s after the scratch was freed" if fin and len(fin) == len(tasks) else
                      "never (failed for good)" if ccds else "n/a")
        row["ok"] = (not ccds) or len(fin) == len(tasks)
        if not ccds:
            row["notes"].append("no task started while the scratch was full")
    elif name == "byte-flip":
        stem = rec["stem"]
        expid = stem.split(".")[0]
        affected = {expid}
        row["when"] += f" (byte {rec['offset']} of {stem}.tar, in staging before the move to the inbox)"
        sp = ev.sparts.get(stem)
        qdirs = sorted((camp.work / "cluster" / "quarantine").glob(f"{stem}*"))
        reason = (qdirs[0] / "reason.txt").read_text().strip() if qdirs and (qdirs[0] / "reason.txt").exists() else None
        damaged = ev.jev(t0, t0 + 600, f"moving {stem} into the inbox failed")
        if damaged:  # push's remote check (tarball vs manifest sha256) before the move into the inbox
            row["detected"] = (f"push's check in staging before the move into the inbox: {len(damaged)} journal "
                               f"`retry` warning(s), first {rel(damaged[0]['t'], t_ref)}: \"{short(damaged[0]['message'], 140)}\"")
        else:
            row["detected"] = (f"ingest's verification: state DB part `{sp['state']}`, reason \"{short(sp['reason'], 120)}\""
                               + (f"; `{qdirs[0].relative_to(camp.work)}/reason.txt`" if qdirs else "")
                               if sp else "the state DB has no row for the part")
        jp = next((p for p in ev.jparts if f"{p['expid']}.p{p['k']}of{p['n']}" == stem), None)
        resent = jp and (jp["t_confirmed"] or 0) > t0 + 5
        tasks = [t for t in ev.tasks if t["part"] == stem]
        row["recovered"] = ("nothing: push had confirmed the part (journal `confirmed`, attempts "
                            f"{jp['attempts'] if jp else '?'}) and never sends it again; no task exists for its CCDs"
                            if not resent and not tasks else
                            f"push sent it again (confirmed {rel(jp['t_confirmed'], t_ref)}); tasks: "
                            + ", ".join(t["state"] for t in tasks))
        done = [t for t in tasks if t["state"] == "done"]
        row["ttr"] = f"{max(t['t_finished'] for t in done) - t0:.0f} s" if tasks and len(done) == len(tasks) else "never"
        row["ok"] = bool(tasks) and len(done) == len(tasks)
        qev = ev.sev(t0, t0 + 600, "quarantined", part=stem)
        if qev:
            row["detected"] += f"; state DB event {rel(qev[0]['t'], t_ref)}: \"{short(qev[0]['message'], 110)}\""
        if reason:
            row["notes"].append(f"quarantine reason.txt: {short(reason, 200)}")
        if getattr(camp, "reconciled", None):
            now = camp.q(camp.state, "SELECT state FROM parts WHERE stem=?", (stem,))
            row["notes"].append(f"after the operator's end-of-night reconcile the part is `{now[0]['state'] if now else 'absent'}` "
                                "in the state DB (see below)")
    elif name == "truncated-raw":
        affected = {rec["expid"]}
        row["when"] += f" ({rec['name']} written cut to half its size)"
        jf = next((f for f in ev.jfiles if f["path"].endswith("/" + rec["name"])), None)
        je = ev.jev(t0, t0 + 3600, rec["name"])
        row["detected"] = (f"push journal: files row `{jf['state']}`, reason \"{short(jf['reason'], 120)}\""
                           + (f"; error event {rel(je[0]['t'], t_ref)}" if je else "") if jf else "not in the push journal")
        row["recovered"] = "nothing to recover: the expected, named loss (never packed or sent)"
        row["ttr"] = f"named {je[0]['t'] - t0:.0f} s after it was written (push.incomplete_timeout {a.incomplete_timeout:g} s)" if je else "never named"
        row["ok"] = bool(jf and jf["state"] == "failed" and jf["reason"])
        row["expected_loss"] = rec["expid"]
    elif name == "duplicate-part":
        stem = rec["stem"]
        affected = {stem.split(".")[0]}
        row["when"] += f" ({stem}: tarball + manifest copied from the parts store into the inbox)"
        evs = ev.sev(t0, t0 + 120, part=stem)
        subs = [s for s in ev.subs if s["part"] == stem]
        row["detected"] = (f"ingest's inbox scan, state DB event {rel(evs[0]['t'], t_ref)}: \"{short(evs[0]['message'], 100)}\""
                           if evs else "no state DB event about the copy")
        left = [p.name for p in camp.inbox.glob(f"{stem}*")]
        row["recovered"] = (f"dropped from the inbox (files left: {left or 'none'}); the part has {len(subs)} "
                            f"submission(s), attempts {sorted(t['attempt'] for t in ev.tasks if t['part'] == stem)}")
        row["ttr"] = f"{evs[0]['t'] - t0:.1f} s (copy to dropped)" if evs else "never"
        row["ok"] = bool(evs) and len(subs) == 1 and not left
    row["lost"] = [e for e in ev.lost_of(affected) if e != row.get("expected_loss")]
    row["twice"] = ev.twice_of(affected)
    row["ok"] = row["ok"] and not row["lost"] and not row["twice"]
    row["affected"] = sorted(x for x in affected if x)
    return row


def slurmctld_lines(prefix: Path, t0: float, t1: float, word: str) -> list[str]:
    """Lines of the private Slurm's slurmctld.log between t0 and t1 containing ``word`` (case-insensitive)."""
    f = Path(prefix) / "var" / "log" / "slurmctld.log"
    out = []
    for line in f.read_text(errors="replace").splitlines() if f.exists() else ():
        if not line.startswith("[") or word.lower() not in line.lower():
            continue
        try:
            t = time.mktime(time.strptime(line[1:20], "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            continue
        if t0 - 1 <= t <= t1:
            out.append(line)
    return out


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def write_fault_results(args, camp: Campaign, ev: Evidence, rows: list[dict], meta: dict) -> str:
    expected = {r["expected_loss"] for r in rows if r.get("expected_loss")}
    unexpected_lost = [e for e in ev.lost if e not in expected]
    named = _failures_named(ev, camp)
    lines = [
        "# Fault campaign: a night over the emulated WAN with faults injected while exposures are in flight", "",
        f"Run {meta['date']} UTC: `{meta['command']}` (commit `{meta['commit']}`), on this shared 2-core VM "
        f"({meta['load']}; other engineers' runs share it). Link `{camp.wan.mode}`, 300 ms RTT, 200 Mbit/s "
        f"(tests/infra/wan). Slurm: a private instance of `tests/infra/start-slurm.sh` (`{camp.slurm.prefix}`, "
        "4 CPUs advertised) so that stopping its slurmd touches nobody else's jobs. The link stayed up, untouched by "
        f"other runs, from set-up to tear-down: {'yes' if meta.get('wan_intact') else 'NO (results suspect)'}."
        + (f" Tables re-derived from this run's databases and records with `--reanalyse` on {meta['reanalysed']}."
           if meta.get("reanalysed") else ""), "",
        f"**Night:** {meta['n_cal']} calibration frames, then {meta['n_sci']} science exposures every {args.cadence:g} s, "
        f"{camp.nccd} CCDs each (K={args.streams} parts, `push --streams {args.streams}`, "
        f"`ingest --array --executor slurm`); push `incomplete_timeout` {args.incomplete_timeout:g} s, rsync "
        f"`timeout_seconds` {args.rsync_timeout:g} s; ingest `max_attempts` {args.max_attempts}, `lost_after_seconds` "
        f"{args.lost_after:g}; node scratch a {args.scratch_mb} MB tmpfs (`node.scratch_vars: [DWF_FAULTS_SCRATCH]` "
        f"(unset), `scratch_fallback` = the tmpfs, `min_free_gb` {args.scratch_min_free_gb:g}). Wall time "
        f"{meta['wall']:.0f} s; {'drained' if meta['drained'] else 'NOT drained (drain timeout)'}. Times are seconds after "
        "the first science exposure was written.", "",
        "Restarts after (2) and (3) and slurmd's restart after (4) are done by the harness, standing in for a "
        "supervisor (systemd `Restart=always`, cron); nothing else is done by hand until the night is over. "
        "\"Detected by\" and \"recovered by\" quote the journal, the state DB, the node result files and the logs.", "",
        "| fault | when | detected by | recovered by | exposures lost | CCDs calibrated twice | time to recover |",
        "|---|---|---|---|---:|---:|---|"]
    for r in rows:
        lost = (", ".join(r["lost"]) if r["lost"] else "0") + (f" (+ {r['expected_loss']}: expected, named)"
                                                               if r.get("expected_loss") else "")
        twice = ", ".join(r["twice"]) if r["twice"] else "0"
        mark = "" if r["ok"] else " **FAIL**"
        lines.append(f"| {r['fault']}{mark} | {r['when']} | {r['detected']} | {r['recovered']} | {lost} | {twice} | {r['ttr']} |")
    checks = [
        ("0 exposures lost (except the truncated raw file)", not unexpected_lost,
         f"lost: {', '.join(f'{e} ({ev.done.get(e, 0)}/{camp.nccd} CCDs done)' for e in ev.lost) or 'none'}"),
        ("the truncated raw file named in the push journal", all(r["ok"] for r in rows if r["name"] == "truncated-raw"),
         next((r["detected"] for r in rows if r["name"] == "truncated-raw"), "not injected")),
        ("0 CCDs calibrated twice (node results with products, per CCD)", not ev.twice,
         ", ".join(f"{e}/{c} x{len(v)}" for (e, c), v in ev.twice.items()) or "none"),
        ("0 CCDs submitted twice at the same attempt (specs of the submissions)", not ev.sub_twice,
         ", ".join(f"{p} CCD {c} attempt {a} x{len(v)}" for (p, c, a), v in ev.sub_twice.items()) or "none"),
        ("product files: one set per CCD done, no stray temporaries",
         sum(ev.products.values()) == ev.sci_done and not ev.stray,
         f"{sum(ev.products.values())} `.cal.fits.fz` for {ev.sci_done} science CCDs done; strays: {ev.stray or 'none'}"),
        ("every failure named with its reason (state DB / journal)", not named["unnamed"],
         named["text"]),
        ("push and ingest never died on their own", not camp.unexpected,
         ", ".join(f"{u['name']} run {u['run']} exit {u['rc']}" for u in camp.unexpected) or "none"),
        ("every fault recovered without a person", all(r["ok"] for r in rows),
         ", ".join(r["name"] for r in rows if not r["ok"]) or "all")]
    lines += ["", "## Required outcome", "", "| check | result | evidence |", "|---|---|---|"]
    for what, ok, evd in checks:
        lines.append(f"| {what} | {'pass' if ok else '**FAIL**'} | {short(evd, 400)} |")
    counts = _count(f"{t['kind']}/{t['state']}" for t in ev.tasks)
    lines += ["", f"Tasks by kind/state at the end: {counts}; parts in the state DB by state: "
              f"{_count(p['state'] for p in ev.sparts.values())}; push journal exposures by state: "
              f"{_count(e['state'] for e in ev.jexp.values())}; {len(ev.subs)} array submissions; node results seen: "
              f"{len(ev.results)} ({_count(r['status'] for r in ev.results)}).", ""]
    notes = [f"- {r['name']}: {n}" for r in rows for n in r["notes"]]
    if getattr(camp, "reconciled", None):
        rc = camp.reconciled
        lines += ["## After the night: an operator's end-of-night reconcile (by a person, not counted above)", "",
                  f"`dwfhpc push --once --mode end-of-night` (the continuous push stopped first) exited {rc['rc']} after "
                  f"{rc['t1'] - rc['t0']:.0f} s; exposures whole afterwards: {meta.get('whole_after')} of "
                  f"{len(ev.written)}; lost afterwards: {meta.get('lost_after') or 'none'}; CCDs calibrated twice "
                  f"afterwards: {meta.get('twice_after') or 'none'}; parts whose state changed: "
                  + (", ".join(f"{k} -> {v['state']}" for k, v in meta.get("reconcile_parts", {}).items()) or "none")
                  + ". Its log: "
                  + short(meta.get("reconcile_log", ""), 900), ""]
    if notes:
        lines += ["## Notes", ""] + notes + [""]
    lines += ["Raw evidence (every fault's record, events, Slurm queue snapshots, node results): `night_faults.json`.", ""]
    return "\n".join(lines)


def _failures_named(ev: Evidence, camp: Campaign) -> dict:
    bad = []
    for t in ev.tasks:
        if t["state"] in ("failed", "lost"):
            bad.append((f"task {t['part']} CCD {t['ccd']} {t['state']}", t["reason"]))
    for p in ev.sparts.values():
        if p["state"] in ("quarantined", "failed"):
            reason = p["reason"]
            if not reason and p["state"] == "failed":  # a part fails through its tasks: their reasons name it
                why = [t["reason"] for t in ev.tasks if t["part"] == p["stem"] and t["state"] != "done"]
                reason = f"(parts.reason empty; its tasks say: {why[0]})" if why and all(why) else None
            bad.append((f"part {p['stem']} {p['state']}", reason))
    for f in ev.jfiles:
        if f["state"] == "failed":
            bad.append((f"raw {Path(f['path']).name} failed", f["reason"]))
    for p in ev.jparts:
        if p["state"] == "failed":
            bad.append((f"sent part {p['expid']}.p{p['k']} failed", p["reason"]))
    unnamed = [w for w, r in bad if not r]
    # an exposure not whole must be explained by one of those rows
    for e in ev.lost:
        if not any(e in w for w, _ in bad) and not any(e in (t["part"] or "") for t in ev.tasks if t["state"] != "done"):
            unnamed.append(f"{e}: not whole ({ev.done.get(e, 0)}/{camp.nccd} CCDs done) and no failed/quarantined row names it")
    text = "; ".join(f"{w}: \"{short(r, 90)}\"" for w, r in bad) or "no failure rows"
    if unnamed:
        text += " | UNNAMED: " + "; ".join(unnamed)
    return {"rows": bad, "unnamed": unnamed, "text": text}


def wait_for_wan(seconds: float) -> None:
    """Wait (up to ``seconds``) while another run's link is up: setting ours up would tear theirs down."""
    deadline = time.time() + seconds
    said = False
    while (users := wanlink.busy()):
        if time.time() > deadline:
            raise SystemExit("night.py: error: the emulated WAN is in use by another run: " + "; ".join(users[:3]))
        if not said:
            say("the emulated WAN is in use by another run (" + "; ".join(users[:2]) + "): waiting")
            said = True
        time.sleep(10)


def run_fault_campaign(args) -> int:
    lacking = wanlink.requirements()
    if lacking:
        print("night.py: error: needs " + ", ".join(lacking), file=sys.stderr)
        return 2
    work = args.work.resolve()
    scratch = work / "scratch-tmpfs"
    if scratch.is_mount():
        subprocess.run(["umount", "-l", str(scratch)], check=False)
    shutil.rmtree(work, ignore_errors=True)
    (work / "stash").mkdir(parents=True)
    files, sci, ccds = simulate_night(args, work)
    # the truncated raw file: the science exposure written nearest FAULT_AT["truncated-raw"]
    idx = min(len(sci) - 1, round(FAULT_AT["truncated-raw"] * args.fault_scale / args.cadence))
    truncate = sci[idx].name
    last_fault = max(FAULT_AT[f] for f in args.fault_list) * args.fault_scale
    if (len(sci) - 1) * args.cadence < last_fault + 30:
        say(f"warning: the last science exposure is written at +{(len(sci) - 1) * args.cadence:.0f} s, the last fault "
            f"at +{last_fault:.0f} s: later faults may find nothing in flight")
    slurm = PrivateSlurm(args.slurm_prefix)
    slurm.start()
    say(f"private Slurm up ({slurm.env['SLURM_CONF']})")
    scratch.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.scratch_mb}m", "tmpfs", str(scratch)], check=True)
    for d in (work / "telescope" / "raw", work / "cluster" / "staging", work / "cluster" / "inbox"):
        d.mkdir(parents=True, exist_ok=True)
    refcat = work / "cluster" / "refcat.fits"
    shutil.copyfile(work / "stash" / "refcat.fits", refcat)
    sampler = LoadSampler(work / "load.txt")
    sampler.start()
    wan = None
    camp = None
    meta = {"date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}", "n_cal": len(files) - len(sci), "n_sci": len(sci),
            "command": "PYTHONPATH=. python3 benchmarks/night.py " + " ".join(sys.argv[1:])}
    meta["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip()
    try:
        wait_for_wan(args.wan_wait)
        try:
            wan = wanlink.setup(work / "wan")
        except BaseException:
            if not wanlink.busy():  # our own half-made link; never someone else's
                wanlink.teardown(work / "wan")
            raise
        say(f"WAN up ({wan.mode})")
        meta["date"] = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}"  # the night starts now (after any wait)
        (work / "site.yaml").write_text(wanlink.site_yaml(
            workdir=work, wan=wan, streams=args.streams, parts=args.streams,
            push={"incomplete_timeout": args.incomplete_timeout},
            transport={"timeout_seconds": int(args.rsync_timeout), "backoff_seconds": 1, "backoff_max": 8,
                       "delivered_dirs": [str(work / "cluster" / "parts")]},
            ingest={"poll_seconds": 2, "report_every_seconds": 3600, "max_attempts": args.max_attempts,
                    "lost_after_seconds": args.lost_after},
            scheduler={"time_minutes": 10, "mem_gb": 1, "array_parallelism": 64},
            node={"scratch_vars": ["DWF_FAULTS_SCRATCH"], "scratch_fallback": str(scratch),
                  "min_free_gb": args.scratch_min_free_gb},
            calibration={"refcat": str(refcat)}))
        chk = subprocess.run(dwfhpc("config", "check", str(work / "site.yaml")), env=env(), capture_output=True, text=True)
        if chk.returncode != 0:
            raise SystemExit(f"night.py: error: config check: {chk.stdout}{chk.stderr}")
        camp = Campaign(args, work, wan, slurm, files, len(ccds), scratch, truncate)
        run = camp.run()
        meta.update(wall=run["wall"], drained=camp.drained)
        if getattr(camp, "reconciled", None):
            log = work / camp.reconciled["log"]
            lines = [ln for ln in log.read_text(errors="replace").splitlines()
                     if any(k in ln for k in ("missing-on-receiver", "reconciled", "end-of-night", "sent", "error"))]
            meta["reconcile_log"] = " / ".join(short(ln.split(" ", 1)[-1], 160) for ln in lines[:8])
    finally:
        sampler.stop.set()
        if wan is not None:
            meta["wan_intact"] = wanlink.intact(wan)
            if meta["wan_intact"]:
                say("teardown: " + wanlink.teardown(work / "wan"))
            else:  # someone else's link now: not ours to tear down
                say("teardown: skipped, the link up now is another run's")
        subprocess.run(["umount", "-l", str(scratch)], check=False)
        if not args.keep_slurm:
            slurm.stop()
            say("private Slurm stopped")
    save_campaign(camp, meta)
    return analyse_campaign(args, camp, meta)


def save_campaign(camp: Campaign, meta: dict) -> None:
    """What the analysis needs besides the databases (``--faults --reanalyse`` reads it back)."""
    keep = {k: getattr(camp, k, None) for k in ("records", "squeue_log", "t_ref", "t_quiet", "unexpected", "reconciled",
                                                  "drained", "truncate", "nccd")}
    keep.update(meta=meta, wan_mode=camp.wan.mode, slurm_prefix=str(camp.slurm.prefix), written=camp.tel.written,
                files=[(str(p), k) for p, k in camp.files], results=list(camp.results.values()),
                night_results=list(camp.ev_night_results.values()), scratch=str(camp.scratch),
                night_products=camp.ev_night.products, night_stray=camp.ev_night.stray)
    (camp.work / "campaign.json").write_text(json.dumps(keep, indent=1, default=str))


def load_campaign(args) -> tuple[Campaign, dict]:
    from types import SimpleNamespace

    work = args.work.resolve()
    d = json.loads((work / "campaign.json").read_text())
    camp = Campaign(args, work, SimpleNamespace(mode=d["wan_mode"]), PrivateSlurm(Path(d["slurm_prefix"])),
                    [(Path(p), k) for p, k in d["files"]], d["nccd"], Path(d["scratch"]), d["truncate"])
    for k in ("records", "t_ref", "t_quiet", "unexpected", "reconciled", "drained"):
        setattr(camp, k, d[k])
    camp.squeue_log = [tuple(x) for x in d["squeue_log"]]
    camp.tel = SimpleNamespace(written=d["written"])
    camp.results = {(r["file"], r["started"], i): r for i, r in enumerate(d["results"])}
    night = {(r["file"], r["started"], i): r for i, r in enumerate(d["night_results"])}
    camp.ev_night = Evidence(camp, work / "night-state.sqlite", work / "night-journal.sqlite", night)
    camp.ev_night.products, camp.ev_night.stray = d["night_products"], d["night_stray"]
    return camp, d["meta"]


def analyse_campaign(args, camp: Campaign, meta: dict) -> int:
    work = camp.work
    if args.reanalyse:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        meta["reanalysed"] = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC (commit `{head}`)"
    ev = camp.ev_night
    order = sorted((r["t0"], n) for n, r in camp.records.items() if n != "truncated-raw")
    rows = []
    for n in args.fault_list:
        if n in camp.records:
            t_next = min((t for t, m in order if t > camp.records[n]["t0"] + 1), default=float("inf"))
            rows.append(analyse_fault(n, camp.records[n], ev, camp, t_next))
    if getattr(camp, "reconciled", None):
        after = Evidence(camp, camp.state, camp.journal, camp.results)
        meta["whole_after"] = len(after.whole)
        meta["lost_after"] = ", ".join(after.lost)
        meta["twice_after"] = ", ".join(f"{e}/{c}" for e, c in after.twice)
        meta["reconcile_parts"] = {s: {"state": p["state"], "reason": p["reason"]} for s, p in after.sparts.items()
                                   if ev.sparts.get(s, {}).get("state") != p["state"]}
    meta["load"] = load_between(work / "load.txt", camp.t_ref - 60, camp.t_quiet)
    text = write_fault_results(args, camp, ev, rows, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = args.out.read_text() if args.out.exists() else ""
    if args.reanalyse and "\n## Findings" in old:  # the hand-written findings of this run survive a re-analysis
        text = text.rstrip("\n") + "\n\n## Findings" + old.split("\n## Findings", 1)[1]
    args.out.write_text(text)
    raw = {"meta": meta, "t_ref": camp.t_ref, "rows": rows, "records": camp.records, "unexpected": camp.unexpected,
           "reconciled": getattr(camp, "reconciled", None),
           "state_events": ev.sevents, "journal_events": ev.jevents, "journal_files": ev.jfiles,
           "squeue": camp.squeue_log, "results": ev.results, "twice": {f"{e}/{c}": v for (e, c), v in ev.twice.items()},
           "lost": ev.lost, "products": ev.products}
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    print(text)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faults", action="store_true",
                    help="the fault campaign instead (issue 15 item 2): a small night with the nine faults injected "
                         "while exposures are in flight; writes results/night_faults.md (other defaults then: "
                         "--ccds 1-4 --exposures 17 --cadence 25 --biases 1 --flats 1 --cal-cadence 10)")
    ap.add_argument("--ccds", default=None, help="CCDs of every exposure (default 1-62: full exposures)")
    ap.add_argument("--exposures", type=int, default=None, help="science exposures (default 6)")
    ap.add_argument("--biases", type=int, default=None, help="(default 2)")
    ap.add_argument("--flats", type=int, default=None, help="(default 2)")
    ap.add_argument("--cadence", type=float, default=None,
                    help="seconds between science exposures (default 160: what this shared 2-core VM sustained, scaled "
                         "to full exposures; see results/night.md; the survey's cadence is 60)")
    ap.add_argument("--cal-cadence", type=float, default=None, help="seconds between calibration frames at dusk (30)")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--stream", action="store_true",
                    help="push with transport.stream (one long-lived dwfhpc receive per stream) instead of rsync")
    ap.add_argument("--seed-exposures", type=int, default=2, help="science exposures also run the seed's way (0: none)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--work", type=Path, default=None, help="(default /tmp/dwfnight, --faults: /tmp/dwfnight-faults)")
    ap.add_argument("--out", type=Path, default=None,
                    help="(default results/night.md, --faults: results/night_faults.md)")
    ap.add_argument("--reanalyse", action="store_true",
                    help="only redo the tables from --work and the previous night.json (no new run)")
    f = ap.add_argument_group("fault campaign (--faults)")
    f.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(FAULTS)}")
    f.add_argument("--fault-scale", type=float, default=1.0, help="stretch the fault schedule (FAULT_AT) by this")
    f.add_argument("--cut-seconds", type=float, default=30.0)
    f.add_argument("--slurmd-seconds", type=float, default=20.0)
    f.add_argument("--scratch-seconds", type=float, default=30.0)
    f.add_argument("--scratch-mb", type=int, default=400, help="size of the node scratch tmpfs")
    f.add_argument("--scratch-leave-mb", type=float, default=30.0, help="free space left in it while it is 'full'")
    f.add_argument("--scratch-min-free-gb", type=float, default=0.05, help="node.min_free_gb")
    f.add_argument("--restart-after", type=float, default=3.0, help="seconds before a killed push/ingest is restarted")
    f.add_argument("--incomplete-timeout", type=float, default=40.0, help="push.incomplete_timeout")
    f.add_argument("--rsync-timeout", type=float, default=15.0, help="transport.timeout_seconds")
    f.add_argument("--max-attempts", type=int, default=3, help="ingest.max_attempts")
    f.add_argument("--lost-after", type=float, default=60.0, help="ingest.lost_after_seconds")
    f.add_argument("--drain-timeout", type=float, default=180.0,
                   help="after the last exposure and fault, give up waiting for quiet after this")
    f.add_argument("--no-reconcile", dest="reconcile", action="store_false",
                   help="skip the operator's end-of-night reconcile after the night")
    f.add_argument("--slurm-prefix", type=Path, default=Path("/tmp/dwf-slurm-faults"),
                   help="the campaign's own private Slurm (ports 7837-7839): its slurmd is stopped by fault 4")
    f.add_argument("--keep-slurm", action="store_true", help="leave the private Slurm running afterwards")
    f.add_argument("--wan-wait", type=float, default=3600.0,
                   help="wait this long for another run's emulated WAN to go away before giving up")
    args = ap.parse_args()
    defaults = ({"ccds": "1-4", "exposures": 17, "cadence": 25.0, "biases": 1, "flats": 1, "cal_cadence": 10.0,
                 "work": Path("/tmp/dwfnight-faults"), "out": HERE / "results" / "night_faults.md"} if args.faults else
                {"ccds": "1-62", "exposures": 6, "cadence": 160.0, "biases": 2, "flats": 2, "cal_cadence": 30.0,
                 "work": Path("/tmp/dwfnight"), "out": HERE / "results" / "night.md"})
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.faults:
        args.fault_list = [x for x in FAULTS if args.only is None or x in args.only.split(",")]
        unknown = set(args.only.split(",")) - set(FAULTS) if args.only else set()
        if unknown:
            ap.error(f"--only: unknown faults {sorted(unknown)}")
        if args.reanalyse:
            camp, meta = load_campaign(args)
            return analyse_campaign(args, camp, meta)
        return run_fault_campaign(args)
    if args.reanalyse:
        return reanalyse(args)
    lacking = wanlink.requirements()
    if lacking:
        print("night.py: error: needs " + ", ".join(lacking), file=sys.stderr)
        return 2
    slurm = slurm_env()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    (work / "stash").mkdir(parents=True)
    files, sci, ccds = simulate_night(args, work)
    sampler = LoadSampler(work / "load.txt")
    sampler.start()
    wait_for_wan(args.wan_wait)
    wan = wanlink.setup(work / "wan")
    say(f"WAN up ({wan.mode})")
    seed_runs: list[dict] = []
    meta = {"mode": wan.mode, "load_log": str(work / "load.txt"), "nccd": len(ccds), "n_cal": len(files) - len(sci), "n_sci": len(sci),
            "mb_per_exp": sci[0].stat().st_size / 1e6, "n_seed": min(args.seed_exposures, len(sci)),
            "transport": "stream" if args.stream else "rsync"}
    try:
        run = run_ours(args, work, wan, slurm, files, len(ccds))
        meta["wall"] = run["wall"]
        t = time.time()
        for raw in sci[: args.seed_exposures]:
            say(f"seed: {raw.name}")
            seed_runs.append(run_seed(raw, work, wan, slurm, work / "cluster" / "masters", work / "cluster" / "refcat.fits",
                                      ccds))
            say(f"seed: {raw.name} done in {max(seed_runs[-1]['ccd_done'].values()) - seed_runs[-1]['t0']:.0f} s")
        meta["seed_wall"] = time.time() - t
        meta["t_seed"] = (t, time.time())
    finally:
        sampler.stop.set()
        if wanlink.intact(wan):
            say("teardown: " + wanlink.teardown(work / "wan"))
        else:
            say("teardown: skipped, the link up now is another run's")
    ours = analyse_ours(run, slurm)
    meta["cadence_lines"] = cadence_lines(ours, args)
    seed = analyse_seed(seed_runs, len(ccds)) if seed_runs else None
    print(write_results(args, ours, seed, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
