"""``night.py --faults``: set-up (the night's files, a private Slurm, the scratch tmpfs, the WAN, the site), the
campaign, tear-down, then the analysis."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from datetime import datetime, timezone

from common.procs import REPO, dwfhpc, env, say
from common.slurm import NodesSlurm, PrivateSlurm
from common.tables import LoadSampler, short
from common.wan import wait_for_wan, wanlink
from night_telescope import simulate_night

from .campaign import Campaign
from .registry import FAULT_PORTS, FAULTS
from .report import analyse_campaign, save_campaign


def run_fault_campaign(args) -> int:
    lacking = wanlink.requirements()
    if lacking:
        print("night.py: error: needs " + ", ".join(lacking), file=sys.stderr)
        return 2
    work = args.work.resolve()
    if args.nodes and (work == Path("/tmp") or Path("/tmp") in work.parents):
        print(f"night.py: error: --nodes: --work {work} is under /tmp, which is private on each node", file=sys.stderr)
        return 2
    scratch = work / "scratch-tmpfs"  # one node: a tmpfs of ours; three nodes: each has its own (NodesSlurm)
    if scratch.is_mount():
        subprocess.run(["umount", "-l", str(scratch)], check=False)
    shutil.rmtree(work, ignore_errors=True)
    (work / "stash").mkdir(parents=True)
    files, sci, ccds = simulate_night(args, work)
    n_cal = len(files) - len(sci)
    for name in args.fault_list:  # a fault may add files of its own to the telescope's schedule (new-masters)
        files = FAULTS[name].prepare(args, work, files)
    # the truncated raw file: the science exposure written nearest the truncated-raw fault's time
    idx = min(len(sci) - 1, round(FAULTS["truncated-raw"].at * args.fault_scale / args.cadence))
    truncate = sci[idx].name if "truncated-raw" in args.fault_list else ""
    last_fault = max(FAULTS[f].at for f in args.fault_list) * args.fault_scale
    if (len(sci) - 1) * args.cadence < last_fault + 30:
        say(f"warning: the last science exposure is written at +{(len(sci) - 1) * args.cadence:.0f} s, the last fault "
            f"at +{last_fault:.0f} s: later faults may find nothing in flight")
    slurm = (NodesSlurm(scratch_size=f"{args.scratch_mb}m") if args.nodes else
             PrivateSlurm(args.slurm_prefix, FAULT_PORTS))
    slurm.start()
    say(f"private Slurm up ({slurm.env['SLURM_CONF']}{', nodes ' + ' '.join(slurm.NODES) if args.nodes else ''})")
    scratch.mkdir(parents=True, exist_ok=True)
    if not args.nodes:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.scratch_mb}m", "tmpfs", str(scratch)], check=True)
    for d in (work / "telescope" / "raw", work / "cluster" / "staging", work / "cluster" / "inbox"):
        d.mkdir(parents=True, exist_ok=True)
    refcat = work / "cluster" / "refcat.fits"
    shutil.copyfile(work / "stash" / "refcat.fits", refcat)
    sampler = LoadSampler(work / "load.txt")
    sampler.start()
    wan = None
    camp = None
    meta = {"date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}", "n_cal": n_cal, "n_sci": len(sci),
            "n_late_cal": len(files) - len(sci) - n_cal,
            "command": "PYTHONPATH=. python3 benchmarks/night.py " + " ".join(sys.argv[1:]),
            "ingest_mode": "workers" if args.workers else "arrays", "workers": args.workers, "nodes": args.nodes,
            **({"worker_minutes": args.worker_minutes, "worker_replace_minutes": args.worker_replace_minutes,
                "worker_stop_minutes": args.worker_stop_minutes} if args.workers else {})}
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
                    "lost_after_seconds": args.lost_after,
                    **({"node_failures_exclude": args.node_failures_exclude,
                        "node_failure_window_minutes": args.node_failure_window} if args.nodes else {}),
                    **({"workers": args.workers, "worker_time_minutes": args.worker_minutes,
                        "worker_replace_minutes": args.worker_replace_minutes,
                        "worker_stop_minutes": args.worker_stop_minutes} if args.workers else {})},
            scheduler={"time_minutes": 10, "mem_gb": 1, "array_parallelism": 64},
            node=({"scratch_vars": ["SLURM_TMPDIR"], "scratch_fallback": NodesSlurm.scratch_dir} if args.nodes else
                  {"scratch_vars": ["DWF_FAULTS_SCRATCH"], "scratch_fallback": str(scratch)})
            | {"min_free_gb": args.scratch_min_free_gb},
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
        if scratch.is_mount():
            subprocess.run(["umount", "-l", str(scratch)], check=False)
        if not args.keep_slurm:
            slurm.stop()
            say("private Slurm stopped")
    save_campaign(camp, meta)
    return analyse_campaign(args, camp, meta)

