"""The embedded calibrator: one raw CCD in, four products out (image, mask, catalog, QA).

Steps, all with geometry from the CCD's own header: per-amplifier row-wise overscan, saturation
flags, trim and assemble, master bias, master flat (median 1), bad-pixel mask, optional gain to
electrons, QA with sep, WCS check against a reference catalog with a shift fit and repair.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from .. import __version__
from ..errors import DwfError, FitsFormatError
from ..instruments import Instrument
from ..instruments.base import CCDGeometry
from ..layout import product_names
from . import maskbits
from .amplifiers import overscan_trim_assemble
from .bpm import bad_pixel_boxes, bpm_file, flag_boxes
from .products import write_catalog, write_image, write_mask, write_qa
from .qa import measure_qa
from .rawio import raw_ccd_number, read_master_pixels, read_pixels, read_raw_ccds, workspace
from .wcs import WcsResult, apply_shift, check_wcs


@dataclass
class CalibrationOutput:
    products: dict[str, Path]
    qa: dict
    wcs: dict
    timings: dict[str, float] = field(default_factory=dict)


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
                    path=None, out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask) of one raw CCD; pure numpy, no I/O, every step in place on the float32 image.

    ``out``: (float32, uint8) buffers of the trimmed shape to fill instead of new arrays.
    """
    geometry = instrument.geometry(header, path)
    image, mask = overscan_trim_assemble(raw, geometry, to_electrons=to_electrons, path=path, out=out)
    if bias is not None:
        if bias.shape != image.shape:
            raise DwfError(f"master bias is {bias.shape}, the CCD is {image.shape}", path)
        np.subtract(image, bias, out=image)
    if flat is not None:
        if flat.shape != image.shape:
            raise DwfError(f"master flat is {flat.shape}, the CCD is {image.shape}", path)
        usable = workspace("flat.usable", image.shape, bool)
        np.greater(flat, 0.2, out=usable)
        np.divide(image, flat, out=image, where=usable)
        if not usable.all():
            np.bitwise_or(mask, maskbits.NO_FLAT, out=mask, where=~usable)
    if bpm is not None:
        np.bitwise_or(mask, maskbits.BAD, out=mask, where=bpm)
    flag_not_finite(image, mask)
    return image, mask


def flag_not_finite(image: np.ndarray, mask: np.ndarray) -> None:
    """Set NOT_FINITE where ``image`` is NaN or infinite (one cheap pass when every pixel is finite)."""
    if np.isfinite(np.add.reduce(image, axis=None, dtype=np.float64)):
        return
    np.bitwise_or(mask, maskbits.NOT_FINITE, out=mask, where=~np.isfinite(image))


def _saturation_above_bias(raw: np.ndarray, geometry: CCDGeometry) -> float | None:
    """The lowest amplifier saturation level minus the median overscan level (for QA's star selection)."""
    saturate = min((a.saturate for a in geometry.amps if a.saturate), default=None)
    if saturate is None:
        return None
    return saturate - float(np.median([np.median(raw[a.bias.slices]) for a in geometry.amps]))


def sky_positions(wcs: WCS, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) of 0-based pixel positions."""
    if not len(x):
        return np.array([]), np.array([])
    ra, dec = wcs.all_pix2world(x, y, 0)
    return ra, dec


def calibrate_file(raw_ccd: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                   bias: str | Path | None = None, flat: str | Path | None = None, bpm: str | Path | None = None,
                   refcat: str | Path | list | None = None, prior_shift: tuple[float, float] | None = None,
                   to_electrons: bool = False, instrument: Instrument | None = None, ccd: int | None = None,
                   qlevel: float = 4.0, min_matches: int = 5,
                   cards: dict[str, tuple] | None = None,
                   pixels: tuple[fits.Header, np.ndarray] | None = None) -> CalibrationOutput:
    """Calibrate one CCD of ``raw_ccd`` and write its four products into ``out_dir``.

    ``pixels``: (header, uint16 raw) of the CCD already in memory (the node's in-memory staging): nothing is
    read from ``raw_ccd``, which only names the CCD in messages.

    ``cards``: extra header cards (key -> (value, comment)) for the image and mask, e.g. the masters' provenance.

    The pixels are read once, into per-thread buffers reused CCD after CCD; calibration, QA and
    the products all work on those arrays in memory. The image is quantised to sky sigma / ``qlevel``.
    """
    timings: dict[str, float] = {}
    t = time.perf_counter()
    raw_ccd = Path(raw_ccd)
    if pixels is not None:
        header, raw = pixels
        inst, number = raw_ccd_number(header, ccd, instrument, raw_ccd)
    else:
        inst, found = read_raw_ccds(raw_ccd, [ccd] if ccd is not None else None, instrument)
        if len(found) > 1:
            raise DwfError(f"{len(found)} CCDs in the file: choose one (ccd=...)", raw_ccd)
        number, header, hdu = found[0]
    expid = inst.expid(header, raw_ccd)
    geometry = inst.geometry(header, raw_ccd)
    bias_img = read_master_pixels(bias, buffer="master.bias") if bias else None
    flat_img = read_master_pixels(flat, buffer="master.flat") if flat else None
    boxes = None
    if bpm:
        f = bpm_file(bpm, number)
        boxes = bad_pixel_boxes(f) if f else None
    if pixels is None:
        raw = read_pixels(raw_ccd, hdu, buffer="raw")
    timings["read"] = time.perf_counter() - t

    t = time.perf_counter()
    shape = geometry.trimmed_shape
    image, mask = calibrate_array(raw, header, inst, bias=bias_img, flat=flat_img, to_electrons=to_electrons,
                                  path=raw_ccd, out=(workspace("image", shape, np.float32),
                                                     workspace("mask", shape, np.uint8)))
    if boxes is not None:
        flag_boxes(mask, boxes, maskbits.BAD)
    timings["calibrate"] = time.perf_counter() - t

    t = time.perf_counter()
    qa, det = measure_qa(image, mask, inst.pixel_scale, _saturation_above_bias(raw, geometry))
    out_header = trimmed_header(header, geometry)
    wcs = WCS(out_header)
    wcs_result = WcsResult("skipped", reason="no reference catalog configured")
    o = det.sources
    if refcat:
        wcs_result = check_wcs(o["x"], o["y"], out_header, refcat, prior=prior_shift, min_matches=min_matches, wcs=wcs)
        if wcs_result.status == "ok":
            apply_shift(out_header, wcs_result.dx, wcs_result.dy)
            wcs.wcs.crval = [float(out_header["CRVAL1"]), float(out_header["CRVAL2"])]
            wcs.wcs.set()
    timings["qa"] = time.perf_counter() - t

    t = time.perf_counter()
    out_header["BUNIT"] = "electron" if to_electrons else "adu"
    out_header["DWFCAL"] = (f"dwfhpc {__version__} embedded", "calibrated by")
    out_header["DWFBIAS"] = (Path(bias).name if bias else "none", "master bias")
    out_header["DWFFLAT"] = (Path(flat).name if flat else "none", "master flat")
    for key, card in (cards or {}).items():
        out_header[key] = card
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
    ra, dec = sky_positions(wcs, o["x"], o["y"])
    catalog = Table({"x": o["x"] + 1, "y": o["y"] + 1, "ra": ra, "dec": dec, "flux": o["flux"], "peak": o["peak"],
                     "a": o["a"], "b": o["b"], "theta": o["theta"], "fwhm": det.fwhm_px * inst.pixel_scale,
                     "flag": o["flag"]})
    catalog.meta["EXPID"], catalog.meta["CCD"] = expid, number
    written = []
    try:
        write_image(paths["cal"], image, out_header, qlevel, noise=det.noise)
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


__all__ = ["CalibrationOutput", "calibrate_array", "calibrate_file", "trimmed_header", "FitsFormatError"]
