"""The baseline of ``benchmarks/ingest.py``: the seed's way, one loop that submits four sbatch scripts per
exposure and follows every job with its own ``squeue -j``."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from ingest_setup import BASE_EXPNUM, SEED_PREFIX, cancel, phases, read_calls

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
