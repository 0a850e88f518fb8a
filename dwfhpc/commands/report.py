"""``dwfhpc report``: regenerate the night report(s) from the state DB (every night, or ``--night N``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import DwfError
from ._common import add_site_arguments, site_from, state_db_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="regenerate the night report(s) (HTML with plots) from the state DB")
    add_site_arguments(p, night="only this night (YYYY-MM-DD; default: every night in the DB)")
    p.add_argument("--out", type=Path, default=None, help="folder for night-<night>.html (default: ingest.report_dir)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report.collect import nights, write_night_reports
    from ..statedb import StateDB

    site = site_from(args)
    path = state_db_path(site)
    out_dir = args.out or site.path(site.ingest.report_dir)
    with StateDB(path) as db:
        known = nights(db)
        if args.night is not None and args.night not in known:
            raise DwfError(f"no data for night {args.night} (nights: {', '.join(known) or 'none'})", path)
        if not known:
            raise DwfError("no nights in the state DB yet (nothing has been ingested)", path)
        written = write_night_reports(site, db, args.night, out_dir)
    chosen = [args.night] if args.night else known
    if args.json:
        print(json.dumps({"state_db": str(path), "out_dir": str(out_dir),
                          "reports": [{"night": n, "path": str(p)} for n, p in zip(chosen, written)]}, indent=1))
        return 0
    for p in written:
        print(p)
    return 0
