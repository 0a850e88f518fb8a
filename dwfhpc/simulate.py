"""Synthetic raw DECam exposures and HSC visits, built on real instrument headers.

No raw DECam or HSC pixels are public in a form we can reach, so the pixels are synthetic, but
every header is real (the 70 extensions of DECam_00200666; HSC frame HSCA90333426) and every
geometry (data, overscan and CCD sections, gains, read noise, saturation) is read from it.

Per amplifier: bias level in overscan and data, read noise (RDNOISE/GAIN in ADU), a per-filter
flat pattern, sky, stars of a generated catalog projected through each CCD's header WCS
re-centred on the pointing (optionally with an injected WCS error), Poisson noise, saturation at
SATURATA/B, cosmic rays, and bad columns from the real bad-pixel masks. OBSTYPE is 'object',
'zero' or 'dome flat'. Deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path

import fitsio
import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning

from .atomic import atomic_path
from .ccdgeom import amp_columns, scatter
from .errors import DwfError
from .fitsio_utils import Section
from .instruments import DECam, HSC
from .instruments.base import CCDGeometry

DATA = Path(str(resources.files("dwfhpc") / "data"))
DECAM_HEADERS = DATA / "DECam_00200666_headers_only.fits"
HSC_HEADER = DATA / "HSCA90333426.headeronly.fits"
BPM_DIR = DATA / "bpm_decam"

# Full DECam filter strings as SISPI writes them.
DECAM_FILTERS = {
    "u": "u DECam c0006 3500.0 1000.0", "g": "g DECam SDSS c0001 4720.0 1520.0",
    "r": "r DECam SDSS c0002 6415.0 1480.0", "i": "i DECam SDSS c0003 7835.0 1470.0",
    "z": "z DECam SDSS c0004 9260.0 1520.0", "Y": "Y DECam c0005 10095.0 1130.0",
    "VR": "VR DECam c0007 6300.0 2600.0",
}
# Dark-sky brightness (mag/arcsec^2) and photometric zero point (AB mag giving 1 e-/s).
SKY_MAG = {"u": 22.9, "g": 22.0, "r": 21.2, "i": 20.5, "z": 19.6, "Y": 18.7, "VR": 21.5,
           "HSC-g": 22.0, "HSC-r": 21.2, "HSC-r2": 21.2, "HSC-i": 20.5, "HSC-i2": 20.5, "HSC-z": 19.6, "HSC-Y": 18.7}
ZERO_POINT = {"u": 26.3, "g": 27.8, "r": 27.9, "i": 27.7, "z": 27.3, "Y": 26.2, "VR": 28.3}  # e-/s, DES-like
HSC_ZERO_POINT = 27.5
OBSTYPES = ("object", "zero", "dome flat")
DEFAULT_POINTING = (150.0, 2.2)  # COSMOS-like field

warnings.simplefilter("ignore", FITSFixedWarning)


from .skycat import StarCatalog, field_seed, make_star_catalog, write_star_catalog  # noqa: E402,F401


# --------------------------------------------------------------------------- headers
@lru_cache(maxsize=2)
def _decam_headers() -> tuple[fits.Header, dict[int, fits.Header]]:
    with fits.open(DECAM_HEADERS) as hdul:
        primary = hdul[0].header.copy()
        ccds = {int(h.header["CCDNUM"]): h.header.copy() for h in hdul[1:] if "CCDNUM" in h.header}
    return primary, ccds


def _bpm_boxes(ccd: int) -> np.ndarray:
    """Bad boxes (x0, y0, w, h; 0-based, trimmed frame) of a DECam CCD."""
    table = _bpm_tables().get(ccd)
    return np.zeros((0, 4), int) if table is None else table


@lru_cache(maxsize=1)
def _bpm_tables() -> dict[int, np.ndarray]:
    out = {}
    for f in sorted(BPM_DIR.glob("*.ecsv")):
        t = Table.read(f)
        out[int(t.meta["DETECTOR"])] = np.array([t["x0"], t["y0"], t["width"], t["height"]]).T.astype(int)
    return out


# --------------------------------------------------------------------------- pixels
@dataclass(frozen=True)
class CCDRecipe:
    """Everything one worker needs to make one CCD's raw pixels."""

    header: fits.Header  # the CCD header as it will be written (WCS offset included)
    true_header: fits.Header  # the WCS the stars are really placed with
    geometry: CCDGeometry
    kind: str  # object | zero | dome flat
    filter_: str
    exptime: float
    sky_e: float  # sky electrons per pixel
    seeing_px: float
    zero_point: float
    stars: StarCatalog | None
    bad_boxes: np.ndarray
    seed: int


def _flat_pattern(shape: tuple[int, int], filter_: str, ccd: int) -> np.ndarray:
    """A smooth, deterministic response pattern of a few per cent, different per filter and CCD."""
    ny, nx = shape
    s = int.from_bytes(hashlib.sha256(f"{filter_}:{ccd}".encode()).digest()[:2], "little") / 65536.0
    y = np.linspace(-1, 1, ny, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, nx, dtype=np.float32)[None, :]
    return (1.0 + 0.03 * (x * (0.5 + s)) - 0.02 * y * y + 0.01 * np.cos(3 * x + 6.28 * s) * np.sin(2 * y)).astype(np.float32)


def _render_stars(img: np.ndarray, recipe: CCDRecipe, x0: int, y0: int) -> None:
    """Add stars (electrons) to ``img``, whose pixel [0, 0] is raw pixel (x0, y0) (0-based)."""
    cat = recipe.stars
    if cat is None or not len(cat.ra):
        return
    wcs = WCS(recipe.true_header)
    px, py = wcs.all_world2pix(cat.ra, cat.dec, 0, tolerance=1e-6, maxiter=50, quiet=True)
    ny, nx = img.shape
    lx, ly = px - x0, py - y0
    inside = np.isfinite(lx) & np.isfinite(ly) & (lx > -10) & (ly > -10) & (lx < nx + 10) & (ly < ny + 10)
    sigma = recipe.seeing_px / 2.3548
    flux = 10 ** (-0.4 * (cat.mag[inside] - recipe.zero_point)) * recipe.exptime
    for cx, cy, f in zip(lx[inside], ly[inside], flux):
        r = int(np.ceil(sigma * (6 if f < 1e6 else 12)))
        xa, xb = max(int(cx) - r, 0), min(int(cx) + r + 1, nx)
        ya, yb = max(int(cy) - r, 0), min(int(cy) + r + 1, ny)
        if xa >= xb or ya >= yb:
            continue
        gx = np.exp(-0.5 * ((np.arange(xa, xb) - cx) / sigma) ** 2)
        gy = np.exp(-0.5 * ((np.arange(ya, yb) - cy) / sigma) ** 2)
        img[ya:yb, xa:xb] += (f / (2 * np.pi * sigma * sigma)) * np.outer(gy, gx)


def _photon_noise(signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise: exact below 30 electrons, Gaussian (sqrt N) above, where the two agree."""
    np.maximum(signal, 0, out=signal)
    noisy = signal + np.sqrt(signal) * rng.standard_normal(signal.shape, dtype=np.float32)
    low = signal < 30
    if low.any():
        noisy[low] = rng.poisson(signal[low])
    return noisy


def make_raw_pixels(recipe: CCDRecipe) -> np.ndarray:
    """The raw CCD as the camera would read it: uint16 ADU over the full raw frame."""
    rng = np.random.default_rng(recipe.seed)
    g = recipe.geometry
    ny, nx = g.raw_shape
    trimmed_shape = g.trimmed_shape
    # signal in electrons on the trimmed frame
    if recipe.kind == "zero":
        signal = np.zeros(trimmed_shape, np.float32)
    else:
        flat = _flat_pattern(trimmed_shape, recipe.filter_, g.ccd)
        if recipe.kind == "dome flat":
            signal = flat * np.float32(recipe.sky_e)
        else:
            signal = np.full(trimmed_shape, recipe.sky_e, np.float32)
            raw_signal = np.zeros((ny, nx), np.float32)
            # stars are placed through the raw-frame WCS, then picked up by the data sections
            _render_stars(raw_signal, recipe, 0, 0)
            from .ccdgeom import assemble

            signal += assemble(raw_signal, g)
            signal *= flat
    signal = _photon_noise(signal, rng) if recipe.kind != "zero" else signal
    # cosmic rays (object frames): short bright tracks
    if recipe.kind == "object":
        n_cr = rng.poisson(1.5 * max(recipe.exptime, 1.0))
        for _ in range(n_cr):
            y, x = rng.integers(5, trimmed_shape[0] - 5), rng.integers(5, trimmed_shape[1] - 5)
            length = rng.integers(1, 8)
            dy, dx = rng.choice([-1, 0, 1]), rng.choice([-1, 1])
            for k in range(length):
                signal[y + dy * k, x + dx * k] += rng.uniform(2000, 20000)
    raw = np.zeros((ny, nx), np.float32)
    owner = amp_columns(g)
    # electrons -> ADU per amplifier, into the raw frame
    adu = np.empty_like(signal)
    for amp in g.amps:
        adu[amp.ccd.slices] = signal[amp.ccd.slices] / np.float32(amp.gain)
    scatter(adu, g, raw)
    # bias and read noise everywhere the amplifier reads (data, overscan, prescan)
    for i, amp in enumerate(g.amps):
        cols = owner == i
        bias = 2000.0 + 700.0 * i + 40.0 * (g.ccd % 7)
        ripple = (3.0 * np.sin(np.arange(ny) / 97.0 + i)).astype(np.float32)[:, None]
        noise = rng.standard_normal((ny, int(cols.sum())), dtype=np.float32) * np.float32(amp.rdnoise / amp.gain)
        raw[:, cols] += np.float32(bias) + ripple + noise
    # saturation at the amplifier's SATURAT level (ADC output clips there)
    for amp in g.amps:
        if amp.saturate:
            block = raw[amp.data.slices]
            np.minimum(block, amp.saturate, out=block)
    # bad columns and pixels from the real mask: hot (+3000 ADU) every fourth box, dead otherwise
    if len(recipe.bad_boxes) and recipe.kind != "zero":
        mask = np.zeros(trimmed_shape, np.float32)
        for j, (x0, y0, w, h) in enumerate(recipe.bad_boxes):
            if w >= trimmed_shape[1] or h >= trimmed_shape[0] or (w <= 16 and h >= 4000 and (x0 < 16 or x0 > trimmed_shape[1] - 32)):
                continue  # edge and whole-CCD boxes: keep the pixels, the calibrator masks them
            mask[y0 : y0 + h, x0 : x0 + w] = 1.0 if j % 4 else 2.0
        raw_mask = scatter(mask, g, np.zeros((ny, nx), np.float32))
        raw[raw_mask == 1.0] *= 0.2  # dead: little response
        raw[raw_mask == 2.0] += 3000.0
    return np.clip(np.rint(raw), 0, 65535).astype(np.uint16)


# --------------------------------------------------------------------------- DECam
def _recentre(header: fits.Header, ra: float, dec: float, ref: tuple[float, float],
              offset_arcsec: tuple[float, float] = (0.0, 0.0)) -> fits.Header:
    h = header.copy()
    dra = ra - ref[0]
    h["CRVAL1"] = (float(header["CRVAL1"]) + dra + offset_arcsec[0] / 3600.0 / np.cos(np.radians(dec))) % 360.0
    h["CRVAL2"] = float(header["CRVAL2"]) + (dec - ref[1]) + offset_arcsec[1] / 3600.0
    return h


def _sexagesimal(ra: float, dec: float) -> tuple[str, str]:
    from astropy.coordinates import Angle

    return (Angle(ra, "deg").to_string(unit="hour", sep=":", precision=3, pad=True),
            Angle(dec, "deg").to_string(unit="deg", sep=":", precision=3, pad=True, alwayssign=True))


def _seed_for(seed: int, expnum: int, ccd: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{expnum}:{ccd}".encode()).digest()[:8], "little")


def _ccd_extension_bytes(recipe: CCDRecipe) -> bytes:
    """Make one CCD and return its RICE tile-compressed HDU as FITS bytes (runs in a worker)."""
    import tempfile

    data = make_raw_pixels(recipe)
    header = recipe.header.copy()
    for key in ("RAWNAX1", "RAWNAX2", "RAWBITPX", "RAWBZERO", "RAWBSCAL"):
        header.remove(key, ignore_missing=True)
    with tempfile.TemporaryDirectory(prefix="dwfsim-") as tmp:
        path = Path(tmp) / "ccd.fits.fz"
        with fitsio.FITS(str(path), "rw", clobber=True) as f:
            f.write(data, header=_fitsio_header(header), compress="RICE", tile_dims=[1, data.shape[1]],
                    extname=str(header.get("EXTNAME", "")).strip() or None)
            start = f[1].get_offsets()['header_start']
        raw = path.read_bytes()
    return raw[start:]


def _write_mef(path: Path, primary: fits.Header, recipes: list[CCDRecipe], jobs: int | None) -> None:
    """A RICE tile-compressed MEF like SISPI's: empty primary, one compressed int16 HDU per CCD.

    CCDs are made and compressed in parallel; their HDUs are appended in order.
    """
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(None, header=_fitsio_header(primary))
    with open(path, "ab") as out:
        for block in _imap(_ccd_extension_bytes, recipes, jobs):
            out.write(block)


_SKIP = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT",
         "BZERO", "BSCALE", "EXTNAME", "NEXTEND", "CHECKSUM", "DATASUM", "END"}


def _fitsio_header(header: fits.Header) -> list[dict]:
    records = []
    for card in header.cards:
        key = card.keyword
        if key in _SKIP or key == "":
            continue
        if key in ("COMMENT", "HISTORY"):
            records.append({"name": key, "value": str(card.value)})
            continue
        records.append({"name": key, "value": card.value, "comment": card.comment})
    return records


def simulate_decam_exposure(out_path: str | os.PathLike[str], *, expnum: int, obstype: str = "object",
                            filter_: str = "g", ccds: list[int] | None = None, seed: int = 0,
                            ra: float | None = None, dec: float | None = None,
                            date_obs: datetime | str | None = None, exptime: float = 20.0,
                            sky: float | None = None, seeing_arcsec: float = 1.2,
                            wcs_offset_arcsec: tuple[float, float] = (0.0, 0.0),
                            catalog_out: str | os.PathLike[str] | None = None, field: str | None = None,
                            jobs: int | None = None) -> Path:
    """Write one raw DECam exposure ``DECam_<expnum:08d>.fits.fz`` and return its path.

    ``out_path`` is a folder (the file name is the SISPI one) or a full file name. ``sky`` is
    electrons per pixel (default: dark sky in the filter for ``exptime``; dome flats ~20000 ADU).
    ``wcs_offset_arcsec`` shifts the *written* WCS from the true one (to exercise WCS repair);
    the truth is kept in SIMWCSDX/SIMWCSDY.
    """
    if obstype not in OBSTYPES:
        raise DwfError(f"obstype must be one of {', '.join(OBSTYPES)}, not {obstype!r}")
    if filter_ not in DECAM_FILTERS:
        raise DwfError(f"unknown DECam filter {filter_!r} (known: {', '.join(DECAM_FILTERS)})")
    out = Path(out_path)
    path = out if out.name.endswith((".fits.fz", ".fits")) else out / f"DECam_{expnum:08d}.fits.fz"
    path.parent.mkdir(parents=True, exist_ok=True)
    decam = DECam()
    primary, ccd_headers = _decam_headers()
    wanted = list(ccds) if ccds else list(decam.science_ccds)
    unknown = [c for c in wanted if c not in ccd_headers or c not in decam.science_ccds]
    if unknown:
        raise DwfError(f"no DECam science CCD(s) {unknown} (science CCDs are 1-62)")
    ra = DEFAULT_POINTING[0] if ra is None else ra
    dec = DEFAULT_POINTING[1] if dec is None else dec
    when = _as_datetime(date_obs)
    if obstype == "zero":
        exptime = 0.0
    # every CCD of the real exposure shares CRVAL (the pointing); shift them all together
    ref = (float(ccd_headers[wanted[0]]["CRVAL1"]), float(ccd_headers[wanted[0]]["CRVAL2"]))

    ph = primary.copy()
    ra_s, dec_s = _sexagesimal(ra, dec)
    t = Time(when)
    ph["EXPNUM"] = expnum
    ph["OBSTYPE"] = obstype
    ph["FILTER"] = DECAM_FILTERS[filter_] if obstype != "zero" else "block 4"
    ph["OBJECT"] = field or ("" if obstype != "object" else f"DWF_{ra:07.3f}{dec:+07.3f}")
    ph["EXPTIME"] = exptime
    ph["EXPREQ"] = exptime
    ph["DARKTIME"] = exptime + 0.9
    ph["DATE-OBS"] = t.isot
    ph["TIME-OBS"] = t.isot.split("T")[1]
    ph["MJD-OBS"] = round(t.mjd, 8)
    ph["OPENSHUT"] = t.isot
    ph["OBSID"] = f"ct4m{when:%Y%m%dt%H%M%S}"
    ph["FILENAME"] = path.name.replace(".fz", "")
    ph["RA"], ph["DEC"], ph["TELRA"], ph["TELDEC"] = ra_s, dec_s, ra_s, dec_s
    ph["PROGRAM"] = "Deeper Wider Faster (simulated by dwfhpc)"
    ph["SIMULATE"] = (True, "synthetic pixels on real DECam headers (dwfhpc)")
    ph["SIMSEED"] = (seed, "dwfhpc simulator seed")
    ph["SIMWCSDX"] = (float(wcs_offset_arcsec[0]), "[arcsec] injected WCS error, RA")
    ph["SIMWCSDY"] = (float(wcs_offset_arcsec[1]), "[arcsec] injected WCS error, Dec")
    ph["NEXTEND"] = len(wanted)

    stars = make_star_catalog(ra, dec) if obstype == "object" else None
    if catalog_out and stars is not None:
        write_star_catalog(catalog_out, stars)
    zp = ZERO_POINT[filter_]
    if sky is None:
        sky_e = (0.0 if obstype == "zero" else
                 20000.0 * 4.0 if obstype == "dome flat" else
                 10 ** (-0.4 * (SKY_MAG[filter_] - zp)) * exptime * decam.pixel_scale ** 2)
    else:
        sky_e = float(sky)
    recipes = []
    for ccd in wanted:
        base = ccd_headers[ccd]
        geometry = decam.geometry(base)
        true_h = _recentre(base, ra, dec, ref)
        written = _recentre(base, ra, dec, ref, wcs_offset_arcsec)
        recipes.append(CCDRecipe(header=written, true_header=true_h, geometry=geometry, kind=obstype,
                                 filter_=filter_, exptime=exptime, sky_e=sky_e,
                                 seeing_px=seeing_arcsec / decam.pixel_scale, zero_point=zp, stars=stars,
                                 bad_boxes=_bpm_boxes(ccd), seed=_seed_for(seed, expnum, ccd)))
    with atomic_path(path) as tmp:
        _write_mef(tmp, ph, recipes, jobs)
    return path


def _imap(func, items: list, jobs: int | None):
    """``map`` in order, in a process pool when there is more than one item and one core."""
    jobs = jobs or min(len(items), os.cpu_count() or 1)
    if jobs <= 1 or len(items) <= 1:
        yield from (func(i) for i in items)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(func, items)


def _map(func, items: list, jobs: int | None) -> list:
    return list(_imap(func, items, jobs))


def _as_datetime(value: datetime | str | None) -> datetime:
    if value is None:
        return datetime(2026, 11, 25, 3, 0, 0, tzinfo=timezone.utc)
    if isinstance(value, str):
        return Time(value, scale="utc").to_datetime(timezone=timezone.utc)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------- HSC
HSC_KIND = {"object": "OBJECT", "zero": "BIAS", "bias": "BIAS", "dome flat": "DOMEFLAT", "domeflat": "DOMEFLAT"}


def simulate_hsc_visit(out_dir: str | os.PathLike[str], *, visit: int, ccds: list[int], obstype: str = "object",
                       filter_: str = "HSC-r", seed: int = 0, ra: float | None = None, dec: float | None = None,
                       date_obs: datetime | str | None = None, exptime: float = 30.0,
                       seeing_arcsec: float = 0.8, jobs: int | None = None) -> list[Path]:
    """Write one raw HSC file per CCD, ``HSCA<visit*100 + ccd:08d>.fits``, on the real HSC header.

    Only one real HSC CCD header is public here (DET-ID 23): every CCD reuses its channel
    geometry; CRPIX is shifted per DET-ID so CCDs tile a 13 x 8 grid (an approximation of the
    real focal plane, enough for grouping and WCS tests).
    """
    if obstype not in HSC_KIND:
        raise DwfError(f"obstype must be one of object, zero, dome flat, not {obstype!r}")
    if not 0 < visit < 1_000_000 or visit % 2:
        raise DwfError(f"HSC visits are even numbers below 1000000, not {visit}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hsc = HSC()
    base = fits.getheader(HSC_HEADER)
    ra = 320.25 if ra is None else ra
    dec = 0.0 if dec is None else dec
    when = _as_datetime(date_obs or "2026-11-25T10:00:00")
    t = Time(when)
    nx, ny = 2144, 4241
    stars = make_star_catalog(ra, dec, radius_deg=0.9) if obstype == "object" else None
    recipes, names = [], []
    for ccd in ccds:
        if ccd not in hsc.science_ccds:
            raise DwfError(f"no HSC science CCD {ccd} (science DET-IDs are 0-103)")
        h = base.copy()
        h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = 2, nx, ny
        frame = f"HSCA{visit * 100 + ccd:08d}"  # DET-IDs >= 100 run into the next (odd) number
        h["FRAMEID"] = frame
        h["EXP-ID"] = f"HSCA{visit:06d}00"
        h["DET-ID"] = ccd
        h["DATA-TYP"] = HSC_KIND[obstype]
        h["FILTER01"] = filter_
        h["EXPTIME"] = 0.0 if obstype == "zero" else exptime
        h["DATE-OBS"] = when.strftime("%Y-%m-%d")
        h["UT-STR"] = h["UT"] = when.strftime("%H:%M:%S.%f")[:12]
        h["MJD-STR"] = h["MJD"] = t.mjd
        h["OBJECT"] = "DWF_HSC" if obstype == "object" else obstype.upper()
        col, row = ccd % 13, ccd // 13
        h["CRPIX1"] = float(base["CRPIX1"]) - 7392.5 + (6 - col) * 2200.0 + nx / 2
        h["CRPIX2"] = float(base["CRPIX2"]) - 13065.833 + (3.5 - row) * 4300.0 + ny / 2
        h["CRVAL1"], h["CRVAL2"] = ra, dec
        h["SIMULATE"] = (True, "synthetic pixels on a real HSC header (dwfhpc)")
        geometry = hsc.geometry(h)
        sky_e = (0.0 if obstype == "zero" else 30000.0 if obstype == "dome flat" else
                 10 ** (-0.4 * (SKY_MAG.get(filter_, 21.0) - HSC_ZERO_POINT)) * exptime * hsc.pixel_scale ** 2)
        recipes.append(CCDRecipe(header=h, true_header=h, geometry=geometry, kind=obstype, filter_=filter_,
                                 exptime=float(h["EXPTIME"]), sky_e=sky_e, seeing_px=seeing_arcsec / hsc.pixel_scale,
                                 zero_point=HSC_ZERO_POINT, stars=stars, bad_boxes=np.zeros((0, 4), int),
                                 seed=_seed_for(seed, visit, ccd)))
        names.append(out / f"{frame}.fits")
    pixels = _map(make_raw_pixels, recipes, jobs)
    written = []
    for recipe, data, path in zip(recipes, pixels, names):
        header = recipe.header.copy()
        for key in ("NAXIS", "NAXIS1", "NAXIS2", "BITPIX", "BZERO", "BSCALE"):
            header.remove(key, ignore_missing=True)
        with atomic_path(path) as tmp:
            with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
                f.write(data, header=_fitsio_header(header))
        written.append(path)
    return written


def parse_ccd_list(text: str) -> list[int]:
    """``"1-4,25,33"`` -> [1, 2, 3, 4, 25, 33]."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise DwfError(f"not a CCD list: {text!r} (expected e.g. 1-4,25,33)") from None
    return sorted(set(out))


def night_start(night: str | None = None, longitude: float = DECam.longitude) -> datetime:
    """UTC of local 21:00 on the evening of ``night`` (default: a fixed night, for reproducibility)."""
    day = datetime.strptime(night or "2026-11-24", "%Y-%m-%d").replace(tzinfo=timezone.utc)
    return day + timedelta(hours=21) - timedelta(hours=longitude / 15.0)


__all__ = ["StarCatalog", "make_star_catalog", "write_star_catalog", "simulate_decam_exposure",
           "simulate_hsc_visit", "parse_ccd_list", "night_start", "Section"]
