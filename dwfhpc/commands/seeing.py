"""``dwfhpc seeing``: stellar FWHM per exposure from the QA of calibrated CCDs."""

from __future__ import annotations

import argparse
import json

from ._common import add_site_arguments, site_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("seeing", help="seeing (median stellar FWHM, arcsec) of calibrated exposures")
    add_site_arguments(p, night="only this night (YYYY-MM-DD)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--exposure", help="expid or exposure number")
    g.add_argument("--last", type=int, default=10, help="the last N exposures (default 10)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.qa_index import exposures, find_exposure

    site = site_from(args)
    items = exposures(site.path(site.calibration.products), args.night)
    chosen = [find_exposure(items, args.exposure)] if args.exposure else items[-args.last:]
    if args.json:
        print(json.dumps([e.as_dict() for e in chosen]))
        return 0
    print(f"{'exposure':16s} {'field':20s} {'filter':6s} {'CCDs':>4s} {'FWHM':>6s} {'ellip':>6s}")
    for e in chosen:
        fwhm = f"{e.fwhm:6.2f}" if e.fwhm is not None else "   n/a"
        ell = f"{e.ellipticity:6.3f}" if e.ellipticity is not None else "   n/a"
        print(f"{e.expid:16s} {e.field:20s} {e.filter:6s} {e.n_ccds:4d} {fwhm} {ell}")
    return 0
