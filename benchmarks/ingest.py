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

The pieces: ``ingest_setup.py`` (cluster, shims, parts, the common schedule), ``ingest_ours.py``
(ours, measured through ``Ingest.run``'s observer, a timing wrapper around the executor and the state
DB's read methods), ``ingest_baseline.py`` (the seed's way), ``ingest_report.py`` (the table).
Writes ``benchmarks/results/ingest.md``. Usage::

    python benchmarks/ingest.py [--quick] [--slurm-conf PATH] [--exposures 20] [--ccds 60] [--parts 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ingest_baseline import run_seed
from ingest_ours import run_ours
from ingest_report import report
from ingest_setup import (HERE, OURS_PREFIX, SEED_PREFIX, build_parts, cancel, ensure_slurm, make_shims, real,
                          schedule)

from dwfhpc.config import IngestSettings
from dwfhpc.instruments import instrument_for


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



if __name__ == "__main__":
    sys.exit(main())
