"""``dwfhpc calibrate``: calibrate raw CCDs by hand with the embedded calibrator."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DwfError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="overscan, bias, flat, masks, QA and WCS check of raw CCDs")
    p.add_argument("raw", type=Path, help="a per-CCD raw FITS file or a whole DECam exposure")
    p.add_argument("--ccd", type=int, action="append", help="CCD to calibrate (repeatable; default: all in the file)")
    p.add_argument("--bias", type=Path, help="master bias file, or a masters folder (nearest night is used)")
    p.add_argument("--flat", type=Path, help="master flat file, or a masters folder")
    p.add_argument("--no-bias", action="store_true", help="overscan only, no master bias")
    p.add_argument("--no-flat", action="store_true", help="no flat-fielding")
    p.add_argument("--bpm", type=Path, help="bad-pixel box list (ECSV) or a folder of them")
    p.add_argument("--refcat", type=Path, action="append", help="reference catalog(s) for the WCS check")
    p.add_argument("--electrons", action="store_true", help="multiply by the gain of each amplifier")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=run)


def _master(given: Path | None, skip: bool, kind: str, night: str, ccd: int, filter_: str, raw: Path) -> Path | None:
    from ..calibrate import find_master

    if skip:
        return None
    if given is None:
        raise DwfError(f"no master {kind} given (--{kind} FILE|DIR, or --no-{kind})", raw)
    if given.is_dir():
        found = find_master(given, kind, night, ccd, filter_ if kind == "flat" else None)
        if found is None:
            raise DwfError(f"no master {kind} for CCD {ccd}{' filter ' + filter_ if kind == 'flat' else ''} in any night", given)
        return found
    if not given.is_file():
        raise DwfError(f"master {kind} is missing", given)
    return given


def run(args: argparse.Namespace) -> int:
    from ..calibrate import calibrate_file
    from ..calibrate.rawio import read_raw_ccds

    inst, found = read_raw_ccds(args.raw, args.ccd)
    for ccd, header, _ in found:
        night, filter_ = inst.night(header, args.raw), inst.filter(header)
        bias = _master(args.bias, args.no_bias, "bias", night, ccd, filter_, args.raw)
        flat = _master(args.flat, args.no_flat, "flat", night, ccd, filter_, args.raw)
        out = calibrate_file(args.raw, args.out, bias=bias, flat=flat, bpm=args.bpm, refcat=args.refcat,
                             to_electrons=args.electrons, instrument=inst, ccd=ccd)
        qa, wcs = out.qa, out.wcs
        fwhm = f"{qa['fwhm_arcsec']:.2f}\"" if qa["fwhm_arcsec"] else "n/a"
        print(f"{out.products['cal'].name}: sky {qa['sky']:.1f} +- {qa['sky_noise']:.1f}, FWHM {fwhm}, "
              f"{qa['n_sources']} sources, WCS {wcs['status']}"
              + (f" ({wcs['n_match']} matches, shift {wcs['dx']:+.2f},{wcs['dy']:+.2f}\", rms {wcs['rms']:.2f}\")"
                 if wcs["status"] == "ok" else f" ({wcs['reason']})" if wcs.get("reason") else ""))
    return 0
