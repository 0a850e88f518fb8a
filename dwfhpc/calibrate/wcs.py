"""Check a CCD's WCS against a local reference catalog, fit a shift, and repair the header.

Matching is two-stage and robust to a pointing error of tens of arcseconds: every source-star
pair within ``search`` arcsec votes for an offset; the densest cluster of votes gives the coarse
shift; stars are then matched within ``radius`` after that shift and the median residual is
the fitted shift. A ``prior`` shift (from neighbouring CCDs) centres the search.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from ..errors import DwfError


@dataclass
class WcsResult:
    status: str  # ok | failed | skipped
    n_match: int = 0
    dx: float = 0.0  # arcsec, east (RA * cos Dec), applied to the header
    dy: float = 0.0  # arcsec, north
    rms: float | None = None  # arcsec, after the shift
    reason: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@lru_cache(maxsize=4)
def _load_refcat(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        t = Table.read(path)
    except (OSError, ValueError) as exc:
        raise DwfError(f"unreadable reference catalog ({exc})", path) from None
    names = {c.lower(): c for c in t.colnames}
    try:
        ra, dec = np.asarray(t[names["ra"]], float), np.asarray(t[names["dec"]], float)
    except KeyError:
        raise DwfError("reference catalog needs ra and dec columns", path) from None
    mag_col = next((names[c] for c in ("mag", "phot_g_mean_mag", "g", "gmag") if c in names), None)
    mag = np.asarray(t[mag_col], float) if mag_col else np.zeros(len(ra))
    return ra, dec, mag


def load_refcat(path: str | Path | list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ra, dec, mag) from one FITS table or several (e.g. Gaia chunks)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    parts = [_load_refcat(str(Path(p).resolve())) for p in paths]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def _offsets(sra, sdec, rra, rdec, dec0):
    cosd = np.cos(np.radians(dec0))
    return (rra - sra) * cosd * 3600.0, (rdec - sdec) * 3600.0


def check_wcs(x: np.ndarray, y: np.ndarray, header: fits.Header, refcat, *, prior: tuple[float, float] | None = None,
              search: float = 30.0, radius: float = 1.5, min_matches: int = 5, wcs: WCS | None = None) -> WcsResult:
    """Match detected sources (0-based pixel x, y) to the reference catalog through ``header``'s WCS.

    ``wcs``: that WCS already built (it is not modified).
    """
    if len(x) < min_matches:
        return WcsResult("failed", reason=f"only {len(x)} sources detected")
    wcs = wcs if wcs is not None else WCS(header)
    sra, sdec = wcs.all_pix2world(x, y, 0)
    rra, rdec, _ = load_refcat(refcat)
    dec0 = float(np.median(sdec))
    px, py = prior or (0.0, 0.0)
    # reference stars near this CCD only
    near = (np.abs(rdec - dec0) < 1.0) & (np.abs(((rra - np.median(sra) + 180) % 360) - 180) * np.cos(np.radians(dec0)) < 1.0)
    rra, rdec = rra[near], rdec[near]
    if len(rra) < min_matches:
        return WcsResult("failed", reason=f"only {len(rra)} reference stars near this CCD")
    cosd = np.cos(np.radians(dec0))
    src = np.column_stack([sra * cosd * 3600.0 + px, sdec * 3600.0 + py])
    ref = np.column_stack([rra * cosd * 3600.0, rdec * 3600.0])
    from scipy.spatial import cKDTree  # only the check needs scipy: not on every import of the calibrator

    tree = cKDTree(ref)
    pairs = tree.query_ball_point(src, r=search)
    dxs, dys = [], []
    for i, js in enumerate(pairs):
        for j in js:
            dxs.append(ref[j, 0] - src[i, 0])
            dys.append(ref[j, 1] - src[i, 1])
    if len(dxs) < min_matches:
        return WcsResult("failed", reason="no reference stars within the search radius")
    dxs, dys = np.array(dxs), np.array(dys)
    bins = np.arange(-search, search + 1.0, 1.0)
    hist, ex, ey = np.histogram2d(dxs, dys, bins=[bins, bins])
    i, j = np.unravel_index(np.argmax(hist), hist.shape)
    cx, cy = (ex[i] + ex[i + 1]) / 2, (ey[j] + ey[j + 1]) / 2
    for r in (2.0 * radius, radius):  # refine
        d, k = tree.query(src + [cx, cy], distance_upper_bound=r)
        ok = np.isfinite(d)
        if ok.sum() < min_matches:
            return WcsResult("failed", n_match=int(ok.sum()), reason=f"{int(ok.sum())} matches (< {min_matches})")
        res = ref[k[ok]] - src[ok]
        cx, cy = float(np.median(res[:, 0])), float(np.median(res[:, 1]))
    resid = ref[k[ok]] - (src[ok] + [cx, cy])
    rms = float(np.sqrt(np.mean(np.sum(resid ** 2, axis=1))))
    return WcsResult("ok", n_match=int(ok.sum()), dx=cx + px, dy=cy + py, rms=rms)


def apply_shift(header: fits.Header, dx: float, dy: float) -> None:
    """Move the WCS so sky positions shift by (dx east, dy north) arcsec: CRVAL moves by the same."""
    dec = float(header["CRVAL2"])
    header["CRVAL1"] = (float(header["CRVAL1"]) + dx / 3600.0 / np.cos(np.radians(dec))) % 360.0
    header["CRVAL2"] = dec + dy / 3600.0
    header["WCSSHIFT"] = (f"{dx:.3f},{dy:.3f}", "[arcsec] dwfhpc WCS correction (east, north)")
