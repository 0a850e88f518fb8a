"""``dwfhpc simulate``: a night of raw exposures in the real format, on real headers."""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from pathlib import Path
from typing import get_args

from ..config import InstrumentName
from ..errors import DwfError
from ._common import ccd_list


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="write simulated raw exposures (biases, dome flats, science) on real headers")
    p.add_argument("--instrument", choices=get_args(InstrumentName), default="decam")
    p.add_argument("--exposures", type=int, default=1, help="science exposures")
    p.add_argument("--biases", type=int, default=0)
    p.add_argument("--flats", type=int, default=0, help="dome flats")
    p.add_argument("--ccds", type=ccd_list, default=None, help="e.g. 1-4,25,33 (default: all science CCDs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cadence", type=float, default=None,
                   help="seconds between exposures, in real time as a telescope would (default: all at once)")
    p.add_argument("--filter", dest="filter_", default=None, help="g (DECam) / HSC-r (HSC)")
    p.add_argument("--field", default=None, help="field name written to OBJECT")
    p.add_argument("--pointing", default=None, help="RA,DEC in degrees of the field centre")
    p.add_argument("--start-expnum", type=int, default=None,
                   help="first exposure number (default 1100001); HSC: first visit (even, default 200000)")
    p.add_argument("--night", default=None, help="YYYY-MM-DD the exposures belong to (default 2026-11-24)")
    p.add_argument("--wcs-offset", default="0,0", help="DX,DY arcsec error injected into the written WCS")
    p.add_argument("--exptime", type=float, default=None, help="seconds (default 20 DECam, 30 HSC)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=run)


def _pair(text: str, what: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split(","))
    except ValueError:
        raise DwfError(f"{what} must be two numbers separated by a comma, not {text!r}") from None
    return a, b


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..simulate import (DECAM_FILTERS, StarCatalog, make_star_catalog, night_start, simulate_decam_exposure,
                            simulate_hsc_visit, write_star_catalog)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    offset = _pair(args.wcs_offset, "--wcs-offset")
    ra, dec = _pair(args.pointing, "--pointing") if args.pointing else (None, None)
    plan = ["zero"] * args.biases + ["dome flat"] * args.flats + ["object"] * args.exposures
    start = night_start(args.night)
    expnum = args.start_expnum or (1100001 if args.instrument == "decam" else 200000)
    step = 1 if args.instrument == "decam" else 2
    total = len(plan)
    t0 = time.monotonic()
    if args.instrument == "decam":
        filter_ = args.filter_ or "g"
        if filter_ not in DECAM_FILTERS:
            raise DwfError(f"unknown DECam filter {filter_!r} (known: {', '.join(DECAM_FILTERS)})")
    else:
        filter_ = args.filter_ or "HSC-r"
    catalogs: list[StarCatalog] = []
    for i, obstype in enumerate(plan):
        if args.cadence and i:
            time.sleep(args.cadence)
        when = start + timedelta(seconds=(args.cadence or 60.0) * i)
        tick = time.monotonic()
        if args.instrument == "decam":
            path = simulate_decam_exposure(out, expnum=expnum, obstype=obstype, filter_=filter_, ccds=args.ccds,
                                           seed=args.seed, ra=ra, dec=dec, date_obs=when,
                                           exptime=args.exptime or 20.0, wcs_offset_arcsec=offset, field=args.field)
            shown = path.name
        else:
            paths = simulate_hsc_visit(out, visit=expnum, ccds=args.ccds or [0, 1, 2, 3], obstype=obstype,
                                       filter_=filter_, seed=args.seed, ra=ra, dec=dec, date_obs=when,
                                       exptime=args.exptime or 30.0)
            shown = f"visit {expnum}: {len(paths)} CCD files"
        print(f"[{i + 1}/{total}] {obstype:9s} {shown}  ({time.monotonic() - tick:.1f} s)", flush=True)
        expnum += step
    if args.exposures:
        centre = (ra, dec) if ra is not None else ((150.0, 2.2) if args.instrument == "decam" else (320.25, 0.0))
        catalogs.append(make_star_catalog(*centre, radius_deg=1.6 if args.instrument == "decam" else 0.9))
        cat = StarCatalog(*(np.concatenate([getattr(c, k) for c in catalogs]) for k in ("ra", "dec", "mag")))
        ref = write_star_catalog(out / "refcat.fits", cat)
        print(f"reference catalog: {ref} ({len(cat.ra)} stars)")
    print(f"{total} exposures in {time.monotonic() - t0:.1f} s -> {out}")
    return 0
