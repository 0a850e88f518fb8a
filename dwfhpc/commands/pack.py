"""``dwfhpc pack``: an exposure into verified, self-describing part tarballs."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import get_args

import fitsio

from ..codecs import DEFAULT_CODEC, DEFAULT_QLEVEL, DEFAULT_RATIO
from ..config import Codec
from ..instruments import read_ccd_headers
from ..parts import pack_exposure
from ..parts.fidelity import HEADER, measure
from ..simulate import parse_ccd_list


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pack", help="compress an exposure per CCD into K part tarballs with manifests")
    p.add_argument("raw", nargs="+", type=Path, help="a DECam MEF, or the per-CCD files of one HSC visit")
    p.add_argument("--codec", choices=get_args(Codec), default=DEFAULT_CODEC,
                   help="auto (default): the raw's own lossless tiles (passthrough) when it has them, else rice")
    p.add_argument("--ratio", type=float, default=DEFAULT_RATIO, help="jp2 target compression ratio")
    p.add_argument("--qlevel", type=float, default=DEFAULT_QLEVEL, help="rice-q quantisation level")
    p.add_argument("--parts", type=int, default=4)
    p.add_argument("--jobs", type=int, default=None, help="compression processes (default: all cores)")
    p.add_argument("--ccds", type=parse_ccd_list, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--report", action="store_true",
                   help="also print ratio, speed, added noise and star flux error of every codec on the first CCD")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raw = args.raw if len(args.raw) > 1 else args.raw[0]
    t = time.perf_counter()
    parts = pack_exposure(raw, args.out, codec=args.codec, parts=args.parts, jobs=args.jobs, ratio=args.ratio,
                          qlevel=args.qlevel, ccds=args.ccds,
                          progress=lambda p: print(f"  {p.tar.name}  ({p.tar.stat().st_size / 1e6:.1f} MB)", flush=True))
    seconds = time.perf_counter() - t
    total = sum(p.tar.stat().st_size for p in parts)
    print(f"{parts[0].expid}: {len(parts)} parts, {total / 1e6:.1f} MB in {seconds:.1f} s -> {args.out}")
    if args.report:
        report(args.raw[0], args)
    return 0


def report(raw: Path, args: argparse.Namespace) -> None:
    inst, _, ccds = read_ccd_headers(raw)
    first = ccds[0]
    with fitsio.FITS(str(raw)) as f:
        data = f[first.hdu].read().astype("uint16")
    geometry = inst.geometry(first.header, raw)
    print(f"\nfidelity on CCD {first.ccd} of {raw.name} ({data.nbytes / 1e6:.1f} MB raw, single process):")
    print(HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        for name, params in (("none", {}), ("rice", {}), ("rice-q", {"qlevel": args.qlevel}),
                             ("jp2", {"ratio": args.ratio}), ("jp2-lossless", {})):
            print(measure(name, first.header, data, geometry, Path(tmp), **params).row(), flush=True)
