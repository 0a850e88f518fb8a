"""``dwfhpc info FILE``: what exposure a file holds, from its headers."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="instrument, exposure, night, obstype, filter, field and CCDs of a FITS file")
    p.add_argument("files", nargs="+", metavar="FILE", help="raw MEF, per-CCD or header-only FITS file")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..instruments import exposure_info

    for path in args.files:
        info = exposure_info(path)
        if args.json:
            print(json.dumps({"file": path, **info.as_dict()}))
            continue
        ccds = sorted(info.ccds)
        shown = ", ".join(map(str, ccds)) if len(ccds) <= 12 else f"{len(ccds)} CCDs ({ccds[0]}..{ccds[-1]})"
        print(f"{path}\n  instrument {info.instrument}\n  exposure   {info.expid} (expnum {info.expnum})"
              f"\n  night      {info.night}\n  date-obs   {info.date_obs}\n  obstype    {info.obstype} ({info.kind})"
              f"\n  filter     {info.filter}\n  field      {info.field}\n  exptime    {info.exptime:g} s"
              f"\n  ccds       {shown}")
    return 0
