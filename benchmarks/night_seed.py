"""The seed's path in ``night.py``: one exposure at a time, one tarball, one ``scp``, untar, sbatch scripts.

Same link, same cluster, same science exposures as our night, after it: one tarball of the raw exposure,
one ``scp`` (a new connection), untar on the shared FS, sbatch scripts of :data:`SEED_CCDS_PER_JOB` CCDs
each running ``dwfhpc calibrate`` per CCD with the night's masters (those our run built).
"""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path

from common.procs import dwfhpc, env
from common.wan import wanlink

SEED_STAGES = ("pack", "transfer", "untar", "queue", "calibrate")
SEED_CCDS_PER_JOB = 15


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

