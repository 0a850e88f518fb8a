"""Master bias and dome flats: build them from a night's frames; find the one a night uses (tonight's, else
the newest earlier night's within an age limit)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
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


#: what reading one frame may raise (all but programming errors): a bad frame is left out, not fatal
FRAME_ERRORS = (DwfError, OSError, ValueError, MemoryError)

#: called with (frame, reason) for each frame a night's build leaves out
RejectHook = Callable[[Path, str], None]


def _frame_problem(kind: str, inst, header: fits.Header, f: Path, *, filter_: str | None) -> str | None:
    """Why this frame may not go into a master ``kind`` (its header decides, not where it was filed), or None.

    Checked before any pixel is read: what the frame is (OBSTYPE / DATA-TYP), its filter for a
    flat, and its size and sections against the instrument's CCD (bounded memory).
    """
    from ..parts.bounds import check_frame_header

    got = inst.kind(header)
    if got != kind:
        return f"its header says a {got} frame ({inst.obstype(header) or 'no obstype'!r}), not {kind}"
    if kind == "flat" and filter_ is not None and (inst.filter(header) or "none") != filter_:
        return f"its header FILTER is {inst.filter(header)!r}, filed as {filter_!r}"
    check_frame_header(header, inst.name, what="frame", path=f)
    return None


def build_master(kind: str, files: list[str | Path], out: str | Path, *, ccd: int | None = None,
                 bias: str | Path | None = None, filter_: str | None = None, min_frames: int = 1,
                 on_reject: RejectHook | None = None) -> Path:
    """Combine raw frames of one CCD into a master ``bias`` or normalised ``flat`` (median 1).

    Each frame's header decides whether it belongs (kind, a flat's ``filter_``, size and sections
    within the instrument's CCD) before its pixels are read. Without ``on_reject`` any bad frame is an
    error (``dwfhpc cals build`` by hand); with it, a bad frame is left out, ``on_reject(frame, reason)``
    is told, and the master is built from the rest if at least ``min_frames`` remain.
    """
    if kind not in ("bias", "flat"):
        raise DwfError(f"--kind must be bias or flat, not {kind!r}")
    if not files:
        raise DwfError(f"no {kind} frames to combine")
    frames, ccds, filters, nights = [], set(), set(), set()
    left_out: list[str] = []
    bias_image = read_master(bias)[0] if bias else None
    for f in files:
        f = Path(f)
        try:
            inst, found = read_raw_ccds(f, [ccd] if ccd is not None else None)
            if len(found) > 1:
                raise DwfError(f"{len(found)} CCDs in the file: say which with --ccd", f)
            number, header, hdu = found[0]
            problem = _frame_problem(kind, inst, header, f, filter_=filter_)
            if problem is not None:
                raise DwfError(problem, f)
            if ccds and number not in ccds:
                raise DwfError(f"is CCD {number}, not CCD {sorted(ccds)[0]}", f)
            image, _ = overscan_trim_assemble(read_pixels(f, hdu), inst.geometry(header, f), path=f)
            if frames and image.shape != frames[0].shape:
                raise DwfError(f"trimmed image {image.shape} differs from the other frames' {frames[0].shape}", f)
            if kind == "flat":
                if bias_image is not None:
                    if bias_image.shape != image.shape:
                        raise DwfError(f"trimmed image {image.shape} differs from the master bias {bias_image.shape}", f)
                    image -= bias_image
                level = np.float32(np.median(image))
                if not np.isfinite(level) or level <= 0:
                    raise DwfError(f"median level {level} after bias subtraction: not a flat", f)
                image /= level
        except FRAME_ERRORS as exc:
            if on_reject is None:
                raise
            reason = str(exc) if isinstance(exc, DwfError) else f"{f}: {type(exc).__name__}: {exc}"
            if isinstance(exc, MemoryError):
                reason = f"{f}: out of memory reading it"
            on_reject(f, reason)
            left_out.append(reason)
            continue
        frames.append(image)
        ccds.add(number)
        filters.add(inst.filter(header))
        nights.add(inst.night(header, f))
    if len(frames) < max(1, min_frames):
        where = f" of CCD {ccd}" if ccd is not None else ""
        raise DwfError(f"{len(frames)} usable {kind} frame(s){where} of {len(files)}, at least {max(1, min_frames)} "
                       f"needed" + (f" (left out: {'; '.join(left_out)})" if left_out else ""), out)
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
    h["NREJECT"] = (len(left_out), "frames left out (wrong kind, filter, size or unreadable)")
    h["BIASCORR"] = (bool(bias) if kind == "flat" else False, "master bias subtracted before combining")
    h["DWFVERS"] = (__version__, "dwfhpc version")
    with atomic_path(out) as tmp:
        fits.PrimaryHDU(master, header=h).writeto(tmp, overwrite=True)
    return Path(out)


def _nights(masters: Path) -> list[str]:
    return sorted(p.name for p in masters.iterdir() if p.is_dir()) if masters.is_dir() else []


#: ``calibration.masters_max_age_days``' default: how old an earlier night's master may be (0: never)
DEFAULT_MAX_AGE_DAYS = 7


@dataclass(frozen=True)
class MasterChoice:
    """The master a CCD is calibrated with: its file, its night, and whether it is another night's."""

    path: Path
    night: str
    fallback: bool  # an earlier night's (tonight's was not there)


def usable_nights(masters: str | os.PathLike[str], night: str,
                  max_age_days: int = DEFAULT_MAX_AGE_DAYS) -> list[str]:
    """Nights whose masters may serve ``night``, in order of preference: ``night`` itself, then the earlier
    nights at most ``max_age_days`` old, newest first. Never a later night; none earlier when the age is 0."""
    target = date.fromisoformat(night)
    out = []
    for n in _nights(Path(masters)):
        try:
            age = (target - date.fromisoformat(n)).days
        except ValueError:  # not a night folder
            continue
        if age == 0 or 0 < age <= max_age_days:
            out.append((age, n))
    return [n for _, n in sorted(out)]


def choose_master(masters: str | os.PathLike[str], kind: str, night: str, ccd: int, filter_: str | None = None, *,
                  max_age_days: int = DEFAULT_MAX_AGE_DAYS) -> MasterChoice | None:
    """The master ``kind`` of this CCD (and filter) for ``night``: tonight's if present, else the newest earlier
    night's within ``max_age_days`` (the seed's copycals, bounded); never a later night's. None if there is none."""
    for n in usable_nights(masters, night, max_age_days):
        p = master_path(Path(masters), n, kind, ccd, filter_)
        if p.is_file():
            return MasterChoice(p, n, n != night)
    return None


def find_master(masters: str | os.PathLike[str], kind: str, night: str, ccd: int, filter_: str | None = None, *,
                max_age_days: int = DEFAULT_MAX_AGE_DAYS) -> Path | None:
    """The path of :func:`choose_master`'s master, or None."""
    choice = choose_master(masters, kind, night, ccd, filter_, max_age_days=max_age_days)
    return choice.path if choice else None


def build_night_masters(library: str | Path, masters: str | Path, night: str, *, progress=print,
                        min_frames: int = 1, on_reject: RejectHook | None = None,
                        on_fail: Callable[[Path, str], None] | None = None) -> list[Path]:
    """Masters for every CCD filed in the calibration library for ``night`` (bias first, then flats).

    A bad frame (its header says another kind or filter, a size or sections no CCD of the
    instrument has, unreadable) is left out and ``on_reject(frame, reason)`` told (default: a
    progress line); the master is built from the rest (at least ``min_frames``). A master that cannot
    be built is skipped with ``on_fail(master, reason)`` and the others are still built; when there
    were frames but no master at all could be built, that is a :class:`DwfError` with the reasons.
    """
    root = Path(library) / night
    if not root.is_dir():
        raise DwfError(f"no calibration frames filed for night {night}", root)
    reject = on_reject or (lambda f, why: progress(f"  left out {f.name}: {why}"))
    failures: list[str] = []

    def failed(out: Path, why: str) -> None:
        failures.append(f"{out.name}: {why}")
        (on_fail or (lambda o, w: progress(f"  {o.name} not built: {w}")))(out, why)

    made = []
    for ccd_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            ccd = int(ccd_dir.name)
        except ValueError:
            continue
        biases = sorted((ccd_dir / "bias").glob("*.fits"))
        bias_out = None
        if biases:
            out = master_path(Path(masters), night, "bias", ccd)
            try:
                bias_out = build_master("bias", biases, out, ccd=ccd, min_frames=min_frames, on_reject=reject)
                made.append(bias_out)
                progress(f"  {bias_out.name}: {len(biases)} frames")
            except FRAME_ERRORS as exc:
                failed(out, str(exc))
        for fdir in sorted(p for p in (ccd_dir / "flat").glob("*") if p.is_dir()):
            flats = sorted(fdir.glob("*.fits"))
            if flats:
                out = master_path(Path(masters), night, "flat", ccd, fdir.name)
                try:
                    made.append(build_master("flat", flats, out, ccd=ccd, bias=bias_out, filter_=fdir.name,
                                             min_frames=min_frames, on_reject=reject))
                    progress(f"  {out.name}: {len(flats)} frames")
                except FRAME_ERRORS as exc:
                    failed(out, str(exc))
    if failures and not made:
        raise DwfError(f"no master built for night {night}: {'; '.join(failures)}", root)
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
