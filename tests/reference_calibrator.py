"""Frozen reference: the embedded calibrator as it was before the lean rewrite (dwfhpc b3e4913).

Copied from ``git show b3e4913:dwfhpc/calibrate/...`` (calibrator, amplifiers, rawio, qa, products,
bpm, the WCS check and masters.read_master), only imports adjusted, so tests can compare today's
calibrator with it on the same inputs. Not maintained: do not "fix" it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np
import sep
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from dwfhpc import __version__
from dwfhpc.calibrate import maskbits
from dwfhpc.calibrate.calibrator import CalibrationOutput
from dwfhpc.calibrate.wcs import WcsResult, load_refcat
from dwfhpc.ccdgeom import orient
from dwfhpc.codecs.base import fitsio_records
from dwfhpc.atomic import atomic_path
from dwfhpc.errors import DwfError, FitsFormatError
from dwfhpc.instruments import Instrument, read_ccd_headers
from dwfhpc.instruments.base import Amplifier, CCDGeometry
from dwfhpc.layout import product_names

import json

EDGE_COLUMNS = 3
sep.set_extract_pixstack(2_000_000)


def overscan_columns(amp: Amplifier, skip: int = EDGE_COLUMNS) -> slice:
    cols = amp.bias.slices[1]
    width = cols.stop - cols.start
    if width <= 2 * skip:
        return cols
    return slice(cols.start + skip, cols.stop - skip)


def overscan_rows(raw: np.ndarray, amp: Amplifier, skip: int = EDGE_COLUMNS) -> np.ndarray:
    """Robust row-wise overscan level: the median of each overscan row, edge columns skipped."""
    rows = amp.bias.slices[0]
    return np.median(raw[rows, overscan_columns(amp, skip)], axis=1)


def overscan_trim_assemble(raw: np.ndarray, geometry: CCDGeometry, *, to_electrons: bool = False,
                           path=None) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask): overscan-subtracted, trimmed, assembled float32 image and its saturation mask."""
    if raw.shape != geometry.raw_shape:
        raise FitsFormatError(f"pixels are {raw.shape}, the header's geometry says {geometry.raw_shape}", path)
    image = np.empty(geometry.trimmed_shape, np.float32)
    mask = np.zeros(geometry.trimmed_shape, np.uint8)
    for amp in geometry.amps:
        rows = amp.data.slices[0]
        if (amp.bias.slices[0].start, amp.bias.slices[0].stop) != (rows.start, rows.stop):
            raise FitsFormatError(f"amp {amp.name}: overscan rows {amp.bias} do not match data rows {amp.data}", path)
        data = raw[amp.data.slices]
        level = overscan_rows(raw, amp).astype(np.float32)[:, None]
        # write straight into the (flipped when needed) view of the destination: no temporaries
        dest = orient(image[amp.ccd.slices], amp)
        np.subtract(data, level, out=dest, casting="unsafe")
        if to_electrons:
            dest *= np.float32(amp.gain)
        if amp.saturate:
            flags = orient(mask[amp.ccd.slices], amp)
            np.bitwise_or(flags, maskbits.SATURATED, out=flags, where=data >= amp.saturate)
    return image, mask


def read_raw_ccds(path: str | Path, ccds: list[int] | None = None,
                  instrument: Instrument | None = None) -> tuple[Instrument, list[tuple[int, fits.Header, int]]]:
    """(instrument, [(ccd, merged header, HDU index)]) of the science CCDs in ``path``."""
    inst, _, headers = read_ccd_headers(path, instrument, ccds)
    if not headers:
        raise FitsFormatError(f"no science CCD{'s ' + str(ccds) if ccds else 's'} in the file", path)
    return inst, [(h.ccd, h.header, h.hdu) for h in headers]


def read_pixels(path: str | Path, hdu: int) -> np.ndarray:
    try:
        with fitsio.FITS(str(path)) as f:
            data = f[hdu].read()
    except (OSError, ValueError) as exc:
        raise FitsFormatError(f"cannot read pixels of HDU {hdu} ({exc})", path) from None
    if data is None or data.ndim != 2:
        raise FitsFormatError(f"HDU {hdu} holds no 2-D image", path)
    return data


def read_master(path: str | Path) -> tuple[np.ndarray, fits.Header]:
    p = Path(path)
    if not p.is_file():
        raise DwfError("master calibration file is missing", p)
    with fits.open(p) as hdul:
        return hdul[0].data.astype(np.float32), hdul[0].header


def _bpm_index(folder: str) -> dict[int, Path]:
    out = {}
    for f in sorted(Path(folder).glob("*.ecsv")):
        detector = Table.read(f).meta.get("DETECTOR")
        if detector is not None:
            out[int(detector)] = f
    return out


def bpm_file(bpm: str | Path, ccd: int) -> Path | None:
    """The box list of ``ccd``: ``bpm`` is a file, or a folder of per-CCD files."""
    p = Path(bpm)
    if p.is_dir():
        return _bpm_index(str(p.resolve())).get(ccd)
    if not p.exists():
        raise DwfError("no such bad-pixel mask", p)
    return p


def bad_pixel_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the boxes in ``path`` on a trimmed frame of ``shape``."""
    try:
        t = Table.read(path)
        boxes = np.array([t["x0"], t["y0"], t["width"], t["height"]]).T.astype(int)
    except (OSError, ValueError, KeyError) as exc:
        raise DwfError(f"not a bad-pixel box list (x0, y0, width, height): {exc}", path) from None
    mask = np.zeros(shape, bool)
    for x0, y0, w, h in boxes:
        mask[max(y0, 0) : y0 + h, max(x0, 0) : x0 + w] = True
    return mask


@dataclass
class Detection:
    sources: np.ndarray  # sep catalog (structured array)
    fwhm_px: np.ndarray  # per source
    background: float
    noise: float


def detect(image: np.ndarray, mask: np.ndarray, threshold: float = 5.0) -> Detection:
    """Background-subtracted sep extraction on good pixels (masked pixels ignored)."""
    data = np.ascontiguousarray(image, dtype=np.float32)
    bad = np.ascontiguousarray((mask != 0) | ~np.isfinite(data))
    clean = np.where(bad, 0, data).astype(np.float32)
    bkg = sep.Background(clean, mask=bad, bw=128, bh=128)
    sub = clean - bkg.back()
    objects = sep.extract(sub, threshold, err=bkg.globalrms, mask=bad, minarea=5, deblend_cont=0.005)
    # FWHM from the half-light radius (exact for a Gaussian: FWHM = 2 r_50); sep's a, b are
    # second moments above the threshold and underestimate it
    if len(objects):
        r50, _ = sep.flux_radius(sub, objects["x"], objects["y"], np.clip(10.0 * objects["a"], 10, 60), 0.5,
                                 subpix=5)
        fwhm = 2.0 * r50
    else:
        fwhm = np.zeros(0)
    return Detection(objects, fwhm, float(bkg.globalback), float(bkg.globalrms))


def stars(det: Detection, saturate: float | None, image_shape: tuple[int, int]) -> np.ndarray:
    """Indices of isolated, unflagged, unsaturated, point-like sources away from the edges."""
    o = det.sources
    ok = (o["flag"] == 0) & (o["npix"] >= 9) & (o["b"] > 0.3)
    ok &= (o["x"] > 20) & (o["x"] < image_shape[1] - 20) & (o["y"] > 20) & (o["y"] < image_shape[0] - 20)
    if saturate:
        ok &= o["peak"] + det.background < 0.7 * saturate
    ok &= o["flux"] > 30 * det.noise
    idx = np.flatnonzero(ok)
    if len(idx) > 5:  # point sources: FWHM close to the population's mode
        med = np.median(det.fwhm_px[idx])
        idx = idx[np.abs(det.fwhm_px[idx] - med) < 0.3 * med]
    return idx


def measure_qa(image: np.ndarray, mask: np.ndarray, pixel_scale: float, saturate: float | None) -> tuple[dict, Detection]:
    det = detect(image, mask)
    good = stars(det, saturate, image.shape)
    o = det.sources
    fwhm = float(np.median(det.fwhm_px[good]) * pixel_scale) if len(good) else None
    ell = float(np.median(1 - o["b"][good] / o["a"][good])) if len(good) else None
    qa = {
        "sky": det.background,
        "sky_noise": det.noise,
        "fwhm_arcsec": fwhm,
        "ellipticity": ell,
        "n_sources": int(len(o)),
        "n_stars": int(len(good)),
        "saturated_fraction": float(np.mean((mask & maskbits.SATURATED) != 0)),
        "bad_fraction": float(np.mean((mask & maskbits.BAD) != 0)),
        "pixel_scale": pixel_scale,
    }
    return qa, det


def _offsets(sra, sdec, rra, rdec, dec0):
    cosd = np.cos(np.radians(dec0))
    return (rra - sra) * cosd * 3600.0, (rdec - sdec) * 3600.0


def check_wcs(x: np.ndarray, y: np.ndarray, header: fits.Header, refcat, *, prior: tuple[float, float] | None = None,
              search: float = 30.0, radius: float = 1.5, min_matches: int = 5) -> WcsResult:
    """Match detected sources (0-based pixel x, y) to the reference catalog through ``header``'s WCS."""
    if len(x) < min_matches:
        return WcsResult("failed", reason=f"only {len(x)} sources detected")
    wcs = WCS(header)
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


def write_image(path: Path, image: np.ndarray, header: fits.Header, qlevel: float) -> None:
    """float32, quantised RICE with SUBTRACTIVE_DITHER_2 (reproducible seed)."""
    with atomic_path(path) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
            f.write(image.astype(np.float32), header=fitsio_records(header), compress="RICE",
                    tile_dims=[100, image.shape[1]], qlevel=qlevel, qmethod="SUBTRACTIVE_DITHER_2", dither_seed=1)


def write_mask(path: Path, mask: np.ndarray, header: fits.Header) -> None:
    h = header.copy()
    maskbits.describe(h)
    with atomic_path(path) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
            f.write(mask.astype(np.int16), header=fitsio_records(h), compress="RICE", tile_dims=[100, mask.shape[1]])


def write_catalog(path: Path, table: Table) -> None:
    with atomic_path(path) as tmp:
        tmp.unlink()
        table.write(tmp, format="fits")


def write_qa(path: Path, qa: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(qa, indent=1, default=float))


def trimmed_header(header: fits.Header, geometry: CCDGeometry) -> fits.Header:
    """The header for the assembled frame: WCS reference pixel moved by the trim offset.

    The offset is that of the amplifier whose CCD section starts at column 1 / row 1 (exact for
    DECam, whose data sections are contiguous; approximate across HSC's overscan gaps).
    """
    h = header.copy()
    first = min(geometry.amps, key=lambda a: (min(a.ccd.x1, a.ccd.x2), min(a.ccd.y1, a.ccd.y2)))
    ox = min(first.data.x1, first.data.x2) - min(first.ccd.x1, first.ccd.x2)
    oy = min(first.data.y1, first.data.y2) - min(first.ccd.y1, first.ccd.y2)
    if "CRPIX1" in h:
        h["CRPIX1"] = float(h["CRPIX1"]) - ox
        h["CRPIX2"] = float(h["CRPIX2"]) - oy
    for key in ("LTV1", "LTV2", "DATASEC", "TRIMSEC", "BIASSEC", "RAWNAX1", "RAWNAX2"):
        h.remove(key, ignore_missing=True)
    for amp in "ABCD":
        for key in ("DATASEC", "BIASSEC", "TRIMSEC", "PRESEC", "POSTSEC"):
            h.remove(f"{key}{amp}", ignore_missing=True)
    return h


def calibrate_array(raw: np.ndarray, header: fits.Header, instrument: Instrument, *, bias: np.ndarray | None = None,
                    flat: np.ndarray | None = None, bpm: np.ndarray | None = None, to_electrons: bool = False,
                    path=None) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask) of one raw CCD; pure numpy, no I/O."""
    geometry = instrument.geometry(header, path)
    image, mask = overscan_trim_assemble(raw, geometry, to_electrons=to_electrons, path=path)
    if bias is not None:
        if bias.shape != image.shape:
            raise DwfError(f"master bias is {bias.shape}, the CCD is {image.shape}", path)
        image -= bias
    if flat is not None:
        if flat.shape != image.shape:
            raise DwfError(f"master flat is {flat.shape}, the CCD is {image.shape}", path)
        usable = flat > 0.2
        np.divide(image, flat, out=image, where=usable)
        if not usable.all():
            mask[~usable] |= maskbits.NO_FLAT
    if bpm is not None:
        mask[bpm] |= maskbits.BAD
    not_finite = ~np.isfinite(image)
    if not_finite.any():
        mask[not_finite] |= maskbits.NOT_FINITE
    return image, mask


def calibrate_file(raw_ccd: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                   bias: str | Path | None = None, flat: str | Path | None = None, bpm: str | Path | None = None,
                   refcat: str | Path | list | None = None, prior_shift: tuple[float, float] | None = None,
                   to_electrons: bool = False, instrument: Instrument | None = None, ccd: int | None = None,
                   qlevel: float = 4.0, min_matches: int = 5) -> CalibrationOutput:
    """Calibrate one CCD of ``raw_ccd`` and write its four products into ``out_dir``."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    raw_ccd = Path(raw_ccd)
    inst, found = read_raw_ccds(raw_ccd, [ccd] if ccd is not None else None, instrument)
    if len(found) > 1:
        raise DwfError(f"{len(found)} CCDs in the file: choose one (ccd=...)", raw_ccd)
    number, header, hdu = found[0]
    expid = inst.expid(header, raw_ccd)
    raw = read_pixels(raw_ccd, hdu)
    bias_img = read_master(bias)[0] if bias else None
    flat_img = read_master(flat)[0] if flat else None
    geometry = inst.geometry(header, raw_ccd)
    bpm_mask = None
    if bpm:
        f = bpm_file(bpm, number)
        bpm_mask = bad_pixel_mask(f, geometry.trimmed_shape) if f else None
    timings["read"] = time.perf_counter() - t

    t = time.perf_counter()
    image, mask = calibrate_array(raw, header, inst, bias=bias_img, flat=flat_img, bpm=bpm_mask,
                                  to_electrons=to_electrons, path=raw_ccd)
    timings["calibrate"] = time.perf_counter() - t

    t = time.perf_counter()
    saturate = min((a.saturate for a in geometry.amps if a.saturate), default=None)
    if saturate is not None:
        saturate -= float(np.median([np.median(raw[a.bias.slices]) for a in geometry.amps]))
    qa, det = measure_qa(image, mask, inst.pixel_scale, saturate)
    out_header = trimmed_header(header, geometry)
    wcs_result = WcsResult("skipped", reason="no reference catalog configured")
    if refcat:
        o = det.sources
        wcs_result = check_wcs(o["x"], o["y"], out_header, refcat, prior=prior_shift, min_matches=min_matches)
        if wcs_result.status == "ok":
            apply_shift(out_header, wcs_result.dx, wcs_result.dy)
    timings["qa"] = time.perf_counter() - t

    t = time.perf_counter()
    out_header["BUNIT"] = "electron" if to_electrons else "adu"
    out_header["DWFCAL"] = (f"dwfhpc {__version__} embedded", "calibrated by")
    out_header["DWFBIAS"] = (Path(bias).name if bias else "none", "master bias")
    out_header["DWFFLAT"] = (Path(flat).name if flat else "none", "master flat")
    qa.update({"expid": expid, "ccd": number, "night": inst.night(header, raw_ccd), "filter": inst.filter(header),
               "field": inst.field(header), "wcs": wcs_result.as_dict(), "bias": out_header["DWFBIAS"],
               "flat": out_header["DWFFLAT"]})
    if qa["fwhm_arcsec"] is not None:
        out_header["FWHM"] = (round(qa["fwhm_arcsec"], 3), "[arcsec] median stellar FWHM (dwfhpc QA)")
    out_header["SKYLEVEL"] = (round(qa["sky"], 3), "median sky (dwfhpc QA)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = product_names(expid, number)
    paths = {k: out_dir / v for k, v in names.items()}
    o = det.sources
    ra, dec = WCS(out_header).all_pix2world(o["x"], o["y"], 0) if len(o) else (np.array([]), np.array([]))
    catalog = Table({"x": o["x"] + 1, "y": o["y"] + 1, "ra": ra, "dec": dec, "flux": o["flux"], "peak": o["peak"],
                     "a": o["a"], "b": o["b"], "theta": o["theta"], "fwhm": det.fwhm_px * inst.pixel_scale,
                     "flag": o["flag"]})
    catalog.meta["EXPID"], catalog.meta["CCD"] = expid, number
    written = []
    try:
        write_image(paths["cal"], image, out_header, qlevel)
        written.append(paths["cal"])
        write_mask(paths["mask"], mask, out_header)
        written.append(paths["mask"])
        write_catalog(paths["cat"], catalog)
        written.append(paths["cat"])
        write_qa(paths["qa"], qa)
    except OSError as exc:  # e.g. a full disk: leave nothing partial behind
        for p in written:
            p.unlink(missing_ok=True)
        raise DwfError(f"cannot write products ({exc.strerror or exc})", out_dir) from None
    timings["write"] = time.perf_counter() - t
    return CalibrationOutput(products=paths, qa=qa, wcs=wcs_result.as_dict(), timings=timings)


