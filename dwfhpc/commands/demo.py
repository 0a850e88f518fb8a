"""``dwfhpc demo``: the README's main command, a simulated night on this machine (DECam or HSC)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import get_args

from ..config import Codec, InstrumentName
from ._common import ccd_list


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run a simulated night through the whole toolkit on this machine")
    p.add_argument("--instrument", choices=get_args(InstrumentName), default="decam",
                   help="decam: one MEF per exposure (default); hsc: one file per CCD, grouped into visits")
    p.add_argument("--exposures", type=int, default=None, help="science exposures / visits (default 4 DECam, 3 HSC)")
    p.add_argument("--cadence", type=float, default=20.0, help="seconds between exposures (default 20)")
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--biases", type=int, default=2)
    p.add_argument("--flats", type=int, default=2)
    p.add_argument("--codec", default="auto", choices=get_args(Codec))
    p.add_argument("--ccds", type=ccd_list, default=None,
                   help="CCDs per exposure, so the night fits a 2-core machine: DECam CCDNUM (default 1-8; 1-62 for "
                        "all), HSC DET-ID (default 41,42,49,50; 0-103 for all)")
    p.add_argument("--workdir", type=Path, default=Path("dwfhpc-night"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: submitit LocalExecutor (default); slurm: the Slurm named by SLURM_CONF")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="warm workers: N long-lived tasks run CCD after CCD, as on an observing night (default: "
                        "configs/local.yaml's ingest.workers, 2); 0: one job array per part")
    p.add_argument("--backend", choices=("embedded", "hscpipe"), default="embedded",
                   help="embedded: dwfhpc's own calibrator (default); hscpipe: processCcd in its Apptainer image "
                        "(HSC only; needs apptainer, --image and --hscpipe-repo)")
    p.add_argument("--image", default=None, help="hscpipe: the Apptainer image (hscpipe.sif)")
    p.add_argument("--hscpipe-repo", default=None,
                   help="hscpipe: butler repo whose CALIB (master bias and flats) and ref_cats each task links")
    p.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds (default 1800)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    if not getattr(args, "debug", False):  # the demo narrates; ingest's per-part lines are in the state DB events
        for handler in logging.getLogger().handlers:  # on the console only: the events table still gets them
            handler.addFilter(lambda r: r.levelno >= logging.WARNING or not r.name.startswith("dwfhpc.ingest"))
    summary = run_demo(args.workdir, instrument=args.instrument, exposures=args.exposures, cadence=args.cadence,
                       streams=args.streams, biases=args.biases, flats=args.flats, codec=args.codec, ccds=args.ccds,
                       seed=args.seed, executor=args.executor, workers=args.workers, backend=args.backend, image=args.image,
                       hscpipe_repo=args.hscpipe_repo, timeout=args.timeout)
    bad = sum(summary["ccds"][g][k] for g in ("science", "calibration") for k in ("failed", "lost", "in_flight"))
    return 0 if bad == 0 else 1
