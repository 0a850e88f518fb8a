"""Our night in ``night.py``: the real ``push`` over the emulated WAN and ``ingest`` on Slurm; its analysis and report.

Stages of one CCD (file complete = the telescope closed the file): see ``night.py``'s docstring and
:data:`STAGES`. The figures come from the package's per-CCD timelines (:mod:`dwfhpc.report.timeline`) read
from copies of the state DB and the push journal (the run's files are only read), Slurm's job-completion log
and the telescope's own log.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from common.cpusample import by_component
from common.cpusample import table as cpu_table
from common.procs import dwfhpc, env, say
from common.slurm import jobcomp_starts, squeue
from common.snapshot import snapshot
from common.tables import load_between, pct, stage_rows
from common.wan import stream_transport, wanlink
from dwfhpc.push import Journal
from dwfhpc.report.timeline import journal_rows, timelines
from dwfhpc.statedb import StateDB
from dwfhpc.states import TASK_FINAL, TaskState
from night_seed import SEED_CCDS_PER_JOB, SEED_STAGES
from night_telescope import Telescope

STAGES = ("wait", "pack", "transfer", "inbox", "hold", "queue", "start", "stage", "calibrate", "copyback", "other")
STAGE_NAMES = {"wait": "wait-for-complete", "hold": "hold (masters, throttle) + submit", "queue": "Slurm queue",
               "copyback": "copy back"}
#: worker mode (``--workers N``): the queue splits at the free worker, start-up runs from the claim
WORKER_STAGES = ("wait", "pack", "transfer", "inbox", "hold", "wait_worker", "dispatch", "start", "stage", "calibrate",
                 "copyback", "other")
WORKER_STAGE_NAMES = {**STAGE_NAMES, "hold": "hold (masters, throttle) + tickets written",
                      "wait_worker": "waiting for a free worker", "dispatch": "dispatch (a worker free -> claimed)",
                      "start": "start-up (claimed -> node code started)"}


def worker_time_minutes(args) -> int:
    """Walltime of each warm worker: longer than the night can last (``--timeout``), at least an hour."""
    return max(60, math.ceil(args.timeout / 60) + 15)


def ingest_mode(args) -> list[str]:
    """``ingest``'s mode options: ``--workers N`` (warm workers) or ``--array`` (one array per part)."""
    return ["--workers", str(args.workers)] if getattr(args, "workers", 0) else ["--array"]


def run_ours(args, work: Path, wan: wanlink.Wan, slurm: dict, files, nccd: int) -> dict:
    raw = work / "telescope" / "raw"
    for d in (raw, work / "cluster" / "staging", work / "cluster" / "inbox"):
        d.mkdir(parents=True, exist_ok=True)
    refcat = work / "cluster" / "refcat.fits"
    shutil.copyfile(work / "stash" / "refcat.fits", refcat)
    site = work / "site.yaml"
    site.write_text(wanlink.site_yaml(
        workdir=work, wan=wan, streams=args.streams, parts=args.streams, push={"codec": getattr(args, "codec", "auto")},
        ingest={"poll_seconds": 2, "report_every_seconds": 600,
                **({"worker_time_minutes": worker_time_minutes(args)} if getattr(args, "workers", 0) else {})},
        scheduler={"time_minutes": 30, "mem_gb": 1, "array_parallelism": 64},
        calibration={"refcat": str(refcat)}, transport=stream_transport(args)))
    subprocess.run(dwfhpc("config", "check", str(site)), env=env(), check=True, capture_output=True)
    logs = {n: (work / f"{n}.log").open("w") for n in ("ingest", "push")}
    procs = {
        "ingest": subprocess.Popen(dwfhpc("ingest", "--config", str(site), *ingest_mode(args), "--executor", "slurm"),
                                   env=env(slurm), stdout=logs["ingest"], stderr=subprocess.STDOUT),
        "push": subprocess.Popen(wan.in_client(dwfhpc("push", "--config", str(site), "--streams", str(args.streams),
                                                      "--no-live")),
                                 env=env(), stdout=logs["push"], stderr=subprocess.STDOUT)}
    state = work / "cluster" / "state.sqlite"

    def masters_built() -> bool:
        """Tonight's masters are all there: a bias and a flat per CCD from a build that ran after the last
        calibration frame was filed (a build may start between frames, with what is filed so far)."""
        try:
            rows = wanlink.query(state, "SELECT masters FROM nights WHERE t_masters IS NOT NULL")
            pending = wanlink.query(state, "SELECT count(*) n FROM tasks WHERE kind != 'science' AND state NOT IN "
                                    "(?, ?, ?)", tuple(TASK_FINAL))[0]["n"]
        except Exception:  # noqa: BLE001 - the state DB is not there yet
            return False
        return bool(rows) and not pending and max(r["masters"] or 0 for r in rows) >= 2 * nccd

    tel = Telescope(files, raw, args.cal_cadence, args.cadence, science_gate=masters_built,
                    gate_seconds=getattr(args, "science_after_masters", 0.0))
    expected = len(files) * nccd
    t0 = time.time()
    tel.start()
    last = 0.0
    try:
        while True:
            counts = {r["state"]: r["n"] for r in wanlink.query(state, "SELECT state, count(*) n FROM tasks GROUP BY state")}
            final = sum(counts.get(s, 0) for s in TASK_FINAL)
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
        if getattr(args, "workers", 0):
            cancel_workers(work, slurm)
    say(f"our night: {expected} CCD tasks final in {time.time() - t0:.0f} s")
    (work / "telescope" / "written.json").write_text(json.dumps(tel.written))
    return {"written": tel.written, "state": state, "journal": work / "telescope" / "push-journal.sqlite",
            "site": site, "wall": time.time() - t0, "gate_waited": tel.gate_waited}


def cancel_workers(work: Path, slurm: dict) -> None:
    """Warm workers of ours still in the queue after ingest stopped (its SIGTERM drains them): scancel by id."""
    ids = set()
    for pool in work.rglob("workers/pool.json"):
        try:
            ids |= {str(m["task_id"]) for m in json.loads(pool.read_text())}
        except (OSError, ValueError, KeyError, TypeError):
            continue
    left = sorted(r["id"] for r in squeue(slurm, ("id",), expand_arrays=True) if r["id"] in ids)
    if left:
        say(f"warm workers still queued after ingest stopped: scancel {' '.join(left)}")
        subprocess.run(["scancel", *left], env=env(slurm), capture_output=True, timeout=30)


def analyse_ours(run: dict, slurm: dict) -> dict:
    """Per-CCD and per-exposure stages of our night from the package's timelines (:mod:`dwfhpc.report.timeline`:
    the state DB, the push journal and the node results), plus the benchmark's own two times: when the
    telescope wrote each file, and (arrays) Slurm's StartTime, which splits the queue from the start-up."""
    with tempfile.TemporaryDirectory() as copies, StateDB(snapshot(run["state"], copies)) as db, \
            Journal(snapshot(run["journal"], copies)) as journal:
        parts, subs = db.parts(), db.submissions()
        jexp, sent = journal_rows(journal)
        lines = timelines(db.tasks(), {p.stem: p for p in parts}, jexp, sent)
        retries = journal.rows("SELECT count(*) n FROM events WHERE message LIKE 'retry%'")[0]["n"]
    starts = jobcomp_starts(slurm)
    warm = [t for t in lines if t.worker and t.state == TaskState.DONE]  # calibration frames too: they keep workers busy
    ccds, counts = [], {}
    for t in lines:
        counts[(t.kind, t.state)] = counts.get((t.kind, t.state), 0) + 1
        if t.kind != "science" or t.state != TaskState.DONE or t.finished is None:
            continue
        written = run["written"].get(t.expid)
        st = {"wait": (t.complete - written) if t.complete and written else None, **t.stages()}
        del st["other"]
        if not t.worker:  # arrays: no claim; Slurm's StartTime splits submitted -> started
            s_start = starts.get(t.job_id)
            st["queue"] = (s_start - t.submitted) if s_start and t.submitted else None
            st["start"] = (t.started - s_start) if s_start and t.started else None
        total = t.finished - written
        st["other"] = total - sum(v for v in st.values() if v is not None)
        ccds.append({"expid": t.expid, "ccd": t.ccd, "total": total, "finished": t.finished, "attempt": t.attempt,
                     "stages": st, **({"worker": t.worker, "preload": t.preload} if t.worker else {})})
    exposures = []
    for expid in sorted({c["expid"] for c in ccds}):
        mine = [c for c in ccds if c["expid"] == expid]
        last = max(mine, key=lambda c: c["finished"])
        e = jexp[expid]
        first_start = min((x for t in lines if t.expid == expid
                           for x in [t.claimed if t.worker else starts.get(t.job_id)] if x), default=None)
        exposures.append({"expid": expid, "ccds": len(mine), "total": last["total"], "stages": last["stages"],
                          "written": run["written"].get(expid), "finished": last["finished"],
                          "pack_busy": e.t_packed - e.t_pack_start, "send_busy": e.t_delivered - e.t_packed,
                          "cluster_busy": (last["finished"] - first_start) if first_start else None})
    return {"ingest_mode": "workers" if warm else "arrays", "workers_seen": len({t.worker for t in warm}),
            "ccds": ccds, "exposures": exposures, "counts": {f"{k}/{s}": n for (k, s), n in counts.items()},
            "submissions": len(subs), "parts": len(parts), "push_retries": retries,
            "max_attempt": max((t.attempt for t in lines), default=0)}


def write_results(args, ours: dict, seed: dict | None, meta: dict) -> str:
    ex, cc = ours["exposures"], ours["ccds"]
    warm = ours.get("ingest_mode", meta.get("ingest_mode")) == "workers"
    n_workers = meta.get("workers") or ours.get("workers_seen", 0)
    stages, names = (WORKER_STAGES, WORKER_STAGE_NAMES) if warm else (STAGES, STAGE_NAMES)
    mode = (f"worker mode, {n_workers} warm workers" if warm else "arrays: one Slurm array per part, one task per CCD")
    ingest_cmd = (f"`ingest --workers {n_workers} --executor slurm` (warm workers, walltime "
                  f"{meta.get('worker_time_minutes', '?')} min)" if warm else "`ingest --array --executor slurm`")
    lines = [
        "# A night over the emulated WAN: latency from file complete to products", "",
        f"Run {meta.setdefault('date', f'{datetime.now(timezone.utc):%Y-%m-%d %H:%M}')} UTC: `sudo python "
        f"benchmarks/night.py {' '.join(a for a in sys.argv[1:] if a != '--reanalyse')}`",
        f"on this shared 2-core VM (the cluster's Slurm node is the same 2 cores, advertising 4 CPUs; the WAN "
        f"emulator's delay line also runs here, ~40% of a core at full rate). Link: `{meta['mode']}`, 300 ms RTT, "
        "200 Mbit/s (tests/infra/wan).", "",
        f"**Size:** {meta['n_cal']} calibration frames (biases + dome flats, every {args.cal_cadence:g} s at dusk), then "
        f"{meta['n_sci']} science exposures every **{args.cadence:g} s**, {meta['nccd']} CCDs each "
        f"({meta['mb_per_exp']:.0f} MB raw per exposure); `push --streams {args.streams}` (codec "
        f"`{meta.get('codec', 'rice')}`, K={args.streams} parts, "
        f"{'transport.stream: one `dwfhpc receive` per stream' if getattr(args, 'stream', False) else 'rsync'}), "
        f"{ingest_cmd}. Wall time of our night: {meta['wall']:.0f} s; the seed's "
        f"{meta['n_seed']} exposures after it: {meta.get('seed_wall', 0):.0f} s.", "",
        f"Outcome: tasks by kind/state {ours['counts']}; {ours['parts']} parts, {ours['submissions']} "
        f"{'submissions (tickets for the workers; ' if warm else 'array submissions ('}one per part: nothing submitted twice), highest task attempt {ours['max_attempt']}, push "
        f"retries {ours['push_retries']}.", ""]
    t_ours = (min(e["written"] for e in ex), max(e["finished"] for e in ex))
    t_seed = meta.get("t_seed") or (t_ours[1], float("inf"))
    load = Path(meta.get("load_log", ""))
    lines += [f"Machine load (other work shares this VM): during our night {load_between(load, *t_ours)}; "
              f"during the seed's exposures {load_between(load, *t_seed)}. On 2 cores, a load of 2 is a full machine.", ""]
    lines += meta["cadence_lines"] + [""]
    lines += [f"## Ours ({mode}): per exposure (its last CCD), seconds", "",
              "| stage | p50 | p95 | max |", "|---|---:|---:|---:|"]
    lines += stage_rows(ex, stages, names)
    tot = [e["total"] for e in ex]
    lines.append(f"| **total: file complete -> products** | **{pct(tot, 50):.1f}** | **{pct(tot, 95):.1f}** | **{max(tot):.1f}** |")
    lines += ["", f"## Ours ({mode}): per CCD, seconds", "", "| stage | p50 | p95 | max |", "|---|---:|---:|---:|"]
    lines += stage_rows(cc, stages, names)
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
    lines += cpu_lines(ours, meta) + target_lines(ours, seed, args, meta)
    split = ("worker mode has no Slurm StartTime per CCD: the queue (tickets written -> claimed, the result's "
             "`worker.claimed`) splits into waiting for a free worker (all busy: from the ticket to the end of the "
             "claiming worker's previous CCD) and dispatch (a worker free -> claimed); start-up is claimed -> node "
             "code started (spec read, preload)" if warm else
             "queue and start split at Slurm's StartTime (1 s resolution, from the job-completion log)")
    lines += ["", f"Notes: {split}; "
              "'other' is what the stages do not explain (e.g. a part verified before the sender's move returned "
              "makes inbox negative, node code outside the timed steps). Raw figures: `night.json`.", ""]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "ours": ours, "seed": seed}, indent=1, default=str))
    return text


def science_window(ours: dict) -> tuple[float, float]:
    """From the first science exposure written to its last CCD's products."""
    ex = ours["exposures"]
    return min(e["written"] for e in ex), max(e["finished"] for e in ex)


def cpu_figures(ours: dict, samples: Path) -> dict | None:
    """CPU-seconds by component over the science window, from the ``/proc`` samples (common/cpusample.py)."""
    if not samples or not Path(samples).exists():
        return None
    cpu = by_component(Path(samples), *science_window(ours))
    cpu["samples"] = str(samples)
    return cpu


def cpu_lines(ours: dict, meta: dict) -> list[str]:
    cpu = meta.get("cpu")
    if not cpu:
        return []
    n_ccd = len(ours["ccds"])
    n_exp = len(ours["exposures"])
    t0, t1 = science_window(ours)
    return ["", f"## CPU during the science ({t1 - t0:.0f} s from the first science exposure written to the last "
            "products), kernel accounting", "",
            "Each process's own user + system CPU from `/proc/<pid>/stat`, sampled every second "
            "(`benchmarks/common/cpusample.py`): a process's CPU at its last sample in the window minus its CPU "
            "before it; children are not added to parents, so nothing counts twice. The machine row is "
            "`/proc/stat` (every process, however short-lived). The calibration frames were done before the window.",
            "", *cpu_table(cpu, {"science CCD": n_ccd, "exposure": n_exp})]


def target_lines(ours: dict, seed: dict | None, args, meta: dict | None = None) -> list[str]:
    ex = ours["exposures"]
    tot = [e["total"] for e in ex]
    trend = ex[-1]["total"] - ex[0]["total"] if len(ex) > 1 else 0.0
    out = ["", "## Targets (issue 25)", ""]
    sustained = trend < args.cadence / 2
    out.append(f"- cadence {args.cadence:g} s, {ex[0]['ccds']}-CCD exposures, sustained on this machine: "
               f"**{'yes' if sustained else 'no'}** (last exposure's latency minus the first's: {trend:+.0f} s)")
    p95 = pct(tot, 95)
    worst = max(ex, key=lambda e: e["total"])
    hold = max(worst["stages"], key=lambda k: worst["stages"][k])
    out.append(f"- file complete -> all CCDs of the exposure calibrated, p95 < 60 s: **{'met' if p95 < 60 else 'NOT met'}** "
               f"(p95 {p95:.1f} s, max {max(tot):.1f} s; the slowest exposure {worst['expid']}: "
               f"its largest stage {hold} {worst['stages'][hold]:.1f} s)")
    cpu = (meta or {}).get("cpu") or {}
    workers_cpu = cpu.get("components", {}).get("warm workers (node code)")
    machine = cpu.get("machine") or {}
    if p95 >= 60 and workers_cpu and machine:
        per_ccd = workers_cpu / len(ours["ccds"])
        ncores = machine["capacity_s"] / max(1e-9, machine["window_s"])
        out.append(f"  - what holds it: the CCDs' own CPU on this machine's {ncores:.0f} cores. The warm workers spent "
                   f"{per_ccd:.2f} CPU-s per CCD, {per_ccd * ex[0]['ccds']:.0f} CPU-s per exposure: "
                   f"{per_ccd * ex[0]['ccds'] / ncores:.0f} s of both cores for each {args.cadence:g} s, beside packing, "
                   f"the receiver, ingest and the link emulator (the machine was "
                   f"{machine['busy_s'] / max(1e-9, machine['capacity_s']):.0%} busy). An exposure's CCDs queue for the "
                   "workers behind its predecessor's (\"waiting for a free worker\"), so latency settles at packing + "
                   "transfer + about one cadence. Below 60 s needs the CCD under ~1 CPU-s or more cores.")
    if seed:
        stot = [e["total"] for e in seed["exposures"]]
        ratio = pct(stot, 95) / p95
        out.append(f"- ours vs the seed's path, exposure p95: **{ratio:.2f}x** (target >= 3x: "
                   f"{'met' if ratio >= 3 else 'NOT met'})")
    return out


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
    samples = getattr(args, "cpu_samples", None) or (meta.get("cpu") or {}).get("samples")
    meta["cpu"] = cpu_figures(ours, Path(samples)) if samples else meta.get("cpu")
    print(write_results(args, ours, prev["seed"], meta))
    return 0

