"""``dwfhpc fullred --visit V``: a full hscPipe reduction array of one HSC visit (one task per CCD)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import DwfError
from ..scheduler import SCHEDULERS, scheduler_for
from ._common import add_site_arguments, site_from, state_db_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fullred", help="submit a full hscPipe reduction of one HSC visit (an array, one task per CCD)",
                       description="Render slurm_templates/full-reduction.sbatch (or pbs_templates/full-reduction.pbs) "
                                   "for the visit's CCDs in the state DB, submit it with sbatch (qsub) and record the "
                                   "job id in the state DB.")
    p.add_argument("--visit", required=True, help="HSC visit number (903334) or expid (HSC_0903334)")
    add_site_arguments(p)
    p.add_argument("--scheduler", choices=SCHEDULERS, default=None,
                   help="default: pbs when ingest.executor is pbs, else slurm")
    p.add_argument("--rerun", default=None, help="rerun name (default: node.hscpipe_rerun + '-full')")
    p.add_argument("--processccd-config", default=None,
                   help="processCcd config file (default: node.hscpipe_config, else the shipped processCcd_dwf.py)")
    p.add_argument("--image", default=None, help="hscpipe image (default: <images.deploy_dir>/hscpipe.sif)")
    p.add_argument("--time-minutes", type=int, default=None, help="per task (default: scheduler.time_minutes)")
    p.add_argument("--mem-gb", type=float, default=None, help="per task (default: scheduler.mem_gb)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--emit", type=Path, default=None, metavar="FILE",
                      help="write the script to FILE, submit nothing")
    mode.add_argument("--dry-run", action="store_true", help="print the script; write and submit nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.fullred import default_script_path, plan, record, submit, write_script
    from ..statedb import StateDB

    site = site_from(args)
    path = state_db_path(site)
    if args.time_minutes is not None and args.time_minutes < 1:
        raise DwfError("--time-minutes must be at least 1")
    if args.mem_gb is not None and args.mem_gb <= 0:
        raise DwfError("--mem-gb must be positive")
    with StateDB(path) as db:
        red = plan(site, db, args.visit, scheduler=args.scheduler, rerun=args.rerun,
                   processccd_config=args.processccd_config, image=args.image, time_minutes=args.time_minutes,
                   mem_gb=args.mem_gb)
        if args.dry_run:
            if args.json:
                print(json.dumps(red.as_dict(with_text=True), indent=1))
            else:
                print(red.text, end="")
            return 0
        script = write_script(red, args.emit or default_script_path(site, red))
        if not args.emit:
            submit(red, script)
            record(db, red)
    if args.json:
        print(json.dumps(red.as_dict(), indent=1))
        return 0
    what = f"HSC visit {red.visit} ({red.expid}): {len(red.ccds)} CCDs, rerun {red.rerun}"
    if args.emit:
        print(f"{what}: script written to {script} (submit with: {scheduler_for(red.scheduler).submit_command[0]} "
              f"{script})")
    else:
        print(f"{what}: submitted as {red.scheduler} job {red.job_id} ({script}); output in {red.out_dir}")
    return 0
