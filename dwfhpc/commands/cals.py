"""``dwfhpc cals``: build master bias/flats and copy them between nights."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DwfError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cals", help="master calibrations")
    s = p.add_subparsers(dest="cals_command", metavar="ACTION", required=True)
    b = s.add_parser("build", help="combine raw bias or dome-flat frames into masters")
    b.add_argument("files", nargs="*", type=Path, metavar="FILE")
    b.add_argument("--kind", choices=("bias", "flat"))
    b.add_argument("--ccd", type=int, help="CCD to take from multi-CCD files")
    b.add_argument("--bias", type=Path, help="master bias subtracted from flats before combining")
    b.add_argument("--out", type=Path, help="master file to write")
    b.add_argument("--night", help="instead of FILES: every CCD filed in the calibration library for this night")
    b.add_argument("--config", default="local", help="site config (for --night)")
    b.add_argument("--workdir", default=None)
    b.set_defaults(func=build)
    c = s.add_parser("copy", help="copy one night's masters to another night (a night without calibrations)")
    c.add_argument("--from", dest="from_night", required=True)
    c.add_argument("--to", dest="to_night", required=True)
    c.add_argument("--config", default="local")
    c.add_argument("--workdir", default=None)
    c.set_defaults(func=copy)


def build(args: argparse.Namespace) -> int:
    from ..calibrate import build_master, build_night_masters
    from ..config import load_site

    if args.night:
        site = load_site(args.config, workdir=args.workdir)
        made = build_night_masters(site.path(site.calibration.library), site.path(site.calibration.masters), args.night)
        print(f"{len(made)} masters for night {args.night}")
        return 0
    if not args.files or not args.kind or not args.out:
        raise DwfError("give --kind, --out and FILES (or --night NIGHT)")
    out = build_master(args.kind, args.files, args.out, ccd=args.ccd, bias=args.bias)
    print(f"{out}: master {args.kind} from {len(args.files)} frames")
    return 0


def copy(args: argparse.Namespace) -> int:
    from ..calibrate import copy_masters
    from ..config import load_site

    site = load_site(args.config, workdir=args.workdir)
    copied = copy_masters(site.path(site.calibration.masters), args.from_night, args.to_night)
    print(f"{len(copied)} masters copied from {args.from_night} to {args.to_night}")
    return 0
