"""Master bias and dome flats: build them from a night's frames, find the nearest one in time."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clip

from .. import __version__
from ..atomic import atomic_path
from ..errors import DwfError
from ..layout import master_path
from .amplifiers import overscan_trim_assemble
from .rawio import read_pixels, read_raw_ccds


def combine(frames: list[np.ndarray]) -> np.ndarray:
    """Sigma-clipped (3 sigma) median along the stack; a plain median for fewer than three frames."""
    stack = np.stack(frames)
    if len(frames) < 3:
        return np.median(stack, axis=0).astype(np.float32)
    clipped = sigma_clip(stack, sigma=3.0, axis=0, maxiters=2, cenfunc="median", stdfunc="mad_std", masked=True)
    return np.ma.median(clipped, axis=0).filled(np.nan).astype(np.float32)


def read_master(path: str | Path) -> tuple[np.ndarray, fits.Header]:
    p = Path(path)
    if not p.is_file():
        raise DwfError("master calibration file is missing", p)
    with fits.open(p) as hdul:
        return hdul[0].data.astype(np.float32), hdul[0].header


def build_master(kind: str, files: list[str | Path], out: str | Path, *, ccd: int | None = None,
                 bias: str | Path | None = None) -> Path:
    """Combine raw frames of one CCD into a master ``bias`` or normalised ``flat`` (median 1)."""
    if kind not in ("bias", "flat"):
        raise DwfError(f"--kind must be bias or flat, not {kind!r}")
    if not files:
        raise DwfError(f"no {kind} frames to combine")
    frames, ccds, filters, nights = [], set(), set(), set()
    bias_image = read_master(bias)[0] if bias else None
    for f in files:
        inst, found = read_raw_ccds(f, [ccd] if ccd is not None else None)
        if len(found) > 1:
            raise DwfError(f"{len(found)} CCDs in the file: say which with --ccd", f)
        number, header, hdu = found[0]
        if inst.kind(header) != kind:
            raise DwfError(f"is a {inst.kind(header)} frame, not {kind}", f)
        image, _ = overscan_trim_assemble(read_pixels(f, hdu), inst.geometry(header, f), path=f)
        if kind == "flat":
            if bias_image is not None:
                image -= bias_image
            image /= np.float32(np.median(image))
        frames.append(image)
        ccds.add(number)
        filters.add(inst.filter(header))
        nights.add(inst.night(header, f))
    if len(ccds) > 1:
        raise DwfError(f"frames of different CCDs {sorted(ccds)}: combine one CCD at a time")
    master = combine(frames)
    if kind == "flat":
        master /= np.float32(np.nanmedian(master))
    h = fits.Header()
    h["OBSTYPE"] = (f"master {kind}", "dwfhpc master calibration")
    h["CCDNUM"] = ccds.pop()
    h["FILTER"] = ",".join(sorted(filters)) if kind == "flat" else ""
    h["NIGHT"] = ",".join(sorted(nights))
    h["NCOMBINE"] = (len(frames), "frames combined (sigma-clipped median)")
    h["BIASCORR"] = (bool(bias) if kind == "flat" else False, "master bias subtracted before combining")
    h["DWFVERS"] = (__version__, "dwfhpc version")
    with atomic_path(out) as tmp:
        fits.PrimaryHDU(master, header=h).writeto(tmp, overwrite=True)
    return Path(out)


def _nights(masters: Path) -> list[str]:
    return sorted(p.name for p in masters.iterdir() if p.is_dir()) if masters.is_dir() else []


def find_master(masters: str | os.PathLike[str], kind: str, night: str, ccd: int, filter_: str | None = None) -> Path | None:
    """The master for this night, else the one from the nearest night in time (the seed's copycals rule)."""
    masters = Path(masters)
    target = date.fromisoformat(night)
    candidates = []
    for n in _nights(masters):
        try:
            d = date.fromisoformat(n)
        except ValueError:
            continue
        p = master_path(masters, n, kind, ccd, filter_)
        if p.is_file():
            candidates.append((abs((d - target).days), d > target, p))
    return min(candidates)[2] if candidates else None


def build_night_masters(library: str | Path, masters: str | Path, night: str, *, progress=print) -> list[Path]:
    """Masters for every CCD filed in the calibration library for ``night`` (bias first, then flats)."""
    root = Path(library) / night
    if not root.is_dir():
        raise DwfError(f"no calibration frames filed for night {night}", root)
    made = []
    for ccd_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        ccd = int(ccd_dir.name)
        biases = sorted((ccd_dir / "bias").glob("*.fits"))
        bias_out = None
        if biases:
            bias_out = build_master("bias", biases, master_path(Path(masters), night, "bias", ccd), ccd=ccd)
            made.append(bias_out)
            progress(f"  {bias_out.name}: {len(biases)} frames")
        for fdir in sorted(p for p in (ccd_dir / "flat").glob("*") if p.is_dir()):
            flats = sorted(fdir.glob("*.fits"))
            if flats:
                out = build_master("flat", flats, master_path(Path(masters), night, "flat", ccd, fdir.name),
                                   ccd=ccd, bias=bias_out)
                made.append(out)
                progress(f"  {out.name}: {len(flats)} frames")
    return made


def copy_masters(masters: str | Path, from_night: str, to_night: str) -> list[Path]:
    """Copy every master of one night to another (for a night without its own calibrations)."""
    src = Path(masters) / from_night
    if not src.is_dir():
        raise DwfError(f"no masters for night {from_night}", src)
    dest = Path(masters) / to_night
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for f in sorted(src.glob("*.fits")):
        target = dest / f.name
        with fits.open(f) as hdul, atomic_path(target) as tmp:
            hdul[0].header["COPIEDFR"] = (from_night, "dwfhpc cals copy: master from this night")
            hdul.writeto(tmp, overwrite=True)
        copied.append(target)
    return copied
