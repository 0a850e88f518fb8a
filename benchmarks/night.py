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
3. the real ``dwfhpc ingest --array --executor slurm`` runs on the host, on the host's Slurm (``--workers N``:
   ``ingest --workers N`` instead, N warm workers claiming CCD tickets; the queue stage then splits into
   waiting for a free worker and dispatch, start-up runs from the claim: see ``night_run.py``);
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
flight (each fault's ``at``; one class per fault in ``night_faults/``): the link cut 30 s; ``kill -9`` of
push mid-transfer, restarted; ``kill -9`` of ingest, restarted; slurmd stopped 20 s and started again by
``start-slurm.sh``; ``scancel`` of a running task; the scratch filled for 30 s; one byte flipped in a delivered part in the receiver's
staging; a raw file written truncated; a delivered part copied into the inbox again. The restarts
stand in for a supervisor; nothing else is done by hand until the night is quiet, when an operator's
``push --once --mode end-of-night`` reconcile is run (reported apart). What detected and what
recovered each fault is read from the push journal, the state DB (a snapshot taken before the
reconcile), every node result file seen during the night, the Slurm queue and the push logs.
Writes ``benchmarks/results/night_faults.md`` (and ``.json``; ``--reanalyse`` redoes the tables from
``--work``). ``--faults --workers N`` (issue 25 item 5) runs the campaign's ingest on N warm workers with a short
walltime (``--worker-minutes``: every worker rolls over during the night) and adds five faults of their own: a busy
worker's process killed with ``kill -9``; the walltime rolls themselves; ``scancel`` of the whole worker array; a
second bias + dome flat written mid-night (new masters: the workers copy them again); the scratch full while the
workers' preloaded masters are in it. Usage::

    PYTHONPATH=. python3 benchmarks/night.py --faults [--workers 2] [--only link-cut,scancel] [--fault-scale 1]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

# benchmarks/ is first on sys.path when this runs as a script; the modules below live there:
from common.procs import say
from common.slurm import slurm_env
from common.cpusample import CpuSampler
from common.tables import LoadSampler
from common.wan import wait_for_wan, wanlink
from night_faults.registry import FAULTS
from night_run import analyse_ours, cadence_lines, cpu_figures, reanalyse, run_ours, worker_time_minutes, write_results
from night_seed import analyse_seed, run_seed
from night_telescope import simulate_night

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faults", action="store_true",
                    help="the fault campaign instead (issue 15 item 2): a small night with the nine faults injected "
                         "while exposures are in flight (with --workers N: fourteen); writes results/night_faults.md "
                         "(other defaults then: --ccds 1-4 --exposures 17 (--workers: 26) --cadence 25 --biases 1 "
                         "--flats 1 --cal-cadence 10)")
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
    ap.add_argument("--workers", type=int, default=0,
                    help="our ingest in worker mode: `ingest --workers N` (N warm Slurm tasks claim CCD tickets; "
                         "their walltime outlasts --timeout, with --faults: --worker-minutes); default 0: "
                         "`ingest --array`, one array per part")
    ap.add_argument("--science-after-masters", type=float, default=0.0, metavar="S",
                    help="calibrations in the afternoon: science begins once tonight's masters are built (at most S s "
                         "after the last calibration frame; 0: straight after them, as at dusk)")
    ap.add_argument("--codec", default="auto",
                    help="push.codec (default auto, the toolkit's: the raw's own RICE tiles copied as they are)")
    ap.add_argument("--stash", type=Path, default=None, metavar="DIR",
                    help="use this earlier run's simulated files (WORK/stash of a run with the same --ccds, "
                         "--exposures, --biases, --flats; hard-linked) instead of simulating them again")
    ap.add_argument("--cpu-samples", type=Path, default=None, metavar="FILE",
                    help="CPU samples of a cpusample.py already running beside this run (default: sampled here, "
                         "WORK/cpu.jsonl); with --reanalyse: recompute the CPU table from FILE")
    ap.add_argument("--seed-exposures", type=int, default=2, help="science exposures also run the seed's way (0: none)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--work", type=Path, default=None, help="(default /tmp/dwfnight, --faults: /tmp/dwfnight-faults)")
    ap.add_argument("--out", type=Path, default=None,
                    help="(default results/night.md, --faults: results/night_faults.md)")
    ap.add_argument("--reanalyse", action="store_true",
                    help="only redo the tables from --work and the previous night.json (no new run)")
    f = ap.add_argument_group("fault campaign (--faults)")
    f.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(FAULTS)}")
    f.add_argument("--fault-scale", type=float, default=1.0,
                   help="stretch the fault schedule (each fault's `at`) by this")
    f.add_argument("--cut-seconds", type=float, default=30.0)
    f.add_argument("--slurmd-seconds", type=float, default=20.0)
    f.add_argument("--scratch-seconds", type=float, default=30.0)
    f.add_argument("--scratch-mb", type=int, default=None,
                   help="size of the node scratch tmpfs (default 400; --workers: 3000, each warm worker keeps a copy "
                        "of the night's masters in it, ~260 MB for 4 CCDs, and up to 2N workers run during a roll)")
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
    f.add_argument("--worker-minutes", type=int, default=5,
                   help="--workers: ingest.worker_time_minutes of the campaign's workers (short: every worker rolls "
                        "over during the night, every 3 min with the defaults; at least 5)")
    f.add_argument("--worker-replace-minutes", type=float, default=2.0, help="--workers: ingest.worker_replace_minutes")
    f.add_argument("--worker-stop-minutes", type=float, default=1.0,
                   help="--workers: ingest.worker_stop_minutes (less than --worker-replace-minutes)")
    f.add_argument("--nodes", type=int, default=0, choices=(0, 3),
                   help="3: the campaign on the three-node cluster (SLURM_NODES=3 tests/infra/start-slurm.sh; needs "
                        "--workers N) with the node faults (issue 28): a node lost with a busy worker, a node's "
                        "scratch failing until it is excluded; writes results/night_faults_nodes.md")
    f.add_argument("--node-down-seconds", type=float, default=60.0, help="--nodes: how long the lost node stays away")
    f.add_argument("--node-scratch-seconds", type=float, default=240.0,
                   help="--nodes: the node's scratch stays full until it is excluded, at most this long")
    f.add_argument("--node-failures-exclude", type=int, default=3, help="--nodes: ingest.node_failures_exclude")
    f.add_argument("--node-failure-window", type=float, default=4.0,
                   help="--nodes: ingest.node_failure_window_minutes (short: the node comes back in use in the night)")
    f.add_argument("--wan-wait", type=float, default=3600.0,
                   help="wait this long for another run's emulated WAN to go away before giving up")
    args = ap.parse_args()
    defaults = ({"ccds": "1-4", "exposures": 26 if args.workers else 17, "cadence": 25.0, "biases": 1, "flats": 1, "cal_cadence": 10.0,
                 "work": Path("/tmp/dwfnight-faults"), "out": HERE / "results" / "night_faults.md"} if args.faults else
                {"ccds": "1-62", "exposures": 6, "cadence": 160.0, "biases": 2, "flats": 2, "cal_cadence": 30.0,
                 "work": Path("/tmp/dwfnight"), "out": HERE / "results" / "night.md"})
    if args.faults:
        defaults["scratch_mb"] = 1000 if args.nodes else 3000 if args.workers else 400  # --nodes: each node's
        if args.nodes:
            defaults.update(work=Path("/var/tmp/dwfnight-faults-nodes"), out=HERE / "results" / "night_faults_nodes.md")
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.workers < 0:
        ap.error("--workers: N >= 0")
    if args.faults:
        unknown = set(args.only.split(",")) - set(FAULTS) if args.only else set()
        if unknown:
            ap.error(f"--only: unknown faults {sorted(unknown)}")
        from night_faults.driver import run_fault_campaign
        from night_faults.registry import fault_list
        from night_faults.report import analyse_campaign, load_campaign

        if args.reanalyse:
            camp, meta = load_campaign(args)  # the mode (workers N or arrays) is the campaign's
            args.fault_list = fault_list(args.only, args.workers, args.nodes)
            return analyse_campaign(args, camp, meta)
        if args.workers and not (args.worker_minutes >= 5 and args.worker_stop_minutes < args.worker_replace_minutes):
            ap.error("--worker-minutes: at least 5; --worker-stop-minutes less than --worker-replace-minutes")
        if args.nodes and not args.workers:
            ap.error("--nodes 3: needs --workers N (the node faults hit a busy warm worker)")
        args.fault_list = fault_list(args.only, args.workers, args.nodes)
        workers_only = sorted(set(args.only.split(",")) - set(args.fault_list)) if args.only else []
        if workers_only:
            ap.error(f"--only: {', '.join(workers_only)} only with --workers N (node faults: with --nodes 3)")
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
    cpu_sampler = None
    if args.cpu_samples is None:
        args.cpu_samples = work / "cpu.jsonl"
        cpu_sampler = CpuSampler(args.cpu_samples)
        cpu_sampler.start()
    wait_for_wan(args.wan_wait)
    wan = wanlink.setup(work / "wan")
    say(f"WAN up ({wan.mode})")
    seed_runs: list[dict] = []
    meta = {"mode": wan.mode, "load_log": str(work / "load.txt"), "nccd": len(ccds), "n_cal": len(files) - len(sci), "n_sci": len(sci),
            "mb_per_exp": sci[0].stat().st_size / 1e6, "n_seed": min(args.seed_exposures, len(sci)),
            "transport": "stream" if args.stream else "rsync", "codec": args.codec,
            "ingest_mode": "workers" if args.workers else "arrays", "workers": args.workers,
            **({"worker_time_minutes": worker_time_minutes(args)} if args.workers else {})}
    try:
        run = run_ours(args, work, wan, slurm, files, len(ccds))
        meta["wall"] = run["wall"]
        meta["science_after_masters"] = {"limit_s": args.science_after_masters, "waited_s": run.get("gate_waited")}
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
        if cpu_sampler:
            cpu_sampler.stop.set()
        if wanlink.intact(wan):
            say("teardown: " + wanlink.teardown(work / "wan"))
        else:
            say("teardown: skipped, the link up now is another run's")
    ours = analyse_ours(run, slurm)
    meta["cadence_lines"] = cadence_lines(ours, args)
    meta["cpu"] = cpu_figures(ours, args.cpu_samples)
    seed = analyse_seed(seed_runs, len(ccds)) if seed_runs else None
    print(write_results(args, ours, seed, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
