"""Turn an external pipeline's calibrated CCD into dwfhpc's four products (same names, same QA).

The image is re-written as float32 quantised Rice, the backend's mask (any non-zero pixel) becomes
``maskbits.BAD``, and the catalog and QA come from dwfhpc's own sep measurement, so the collector
sees identical products whichever pipeline calibrated the CCD.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from ..calibrate import CalibrationOutput
from ..calibrate import maskbits
from ..calibrate.products import write_catalog, write_image, write_mask, write_qa
from ..calibrate.qa import measure_qa
from ..errors import DwfError
from ..layout import product_names


def _image_hdu(path: Path, hdu: int | None) -> tuple[np.ndarray, fits.Header]:
    try:
        with fits.open(path) as hdul:
            index = hdu if hdu is not None else next(i for i, h in enumerate(hdul) if h.data is not None and h.data.ndim == 2)
            return np.asarray(hdul[index].data, dtype=np.float32), hdul[index].header.copy()
    except (OSError, StopIteration, IndexError) as exc:
        raise DwfError(f"backend output has no image ({exc or 'no 2-D HDU'})", path) from None


def products_from_backend(image: Path, out_dir: Path, *, expid: str, ccd: int, pixel_scale: float, backend: str,
                          mask: Path | None = None, image_hdu: int | None = None, mask_hdu: int | None = None,
                          qlevel: float = 4.0, extra_qa: dict | None = None) -> CalibrationOutput:
    """Write ``<expid>_<ccd>.{cal.fits.fz,mask.fits.fz,cat.fits,qa.json}`` into ``out_dir`` from a backend image."""
    t = time.perf_counter()
    data, header = _image_hdu(image, image_hdu)
    flags = np.zeros(data.shape, np.int16)
    if mask is not None:
        m, _ = _image_hdu(mask, mask_hdu)
        if m.shape != data.shape:
            raise DwfError(f"backend mask is {m.shape}, its image {data.shape}", mask)
        flags[m != 0] |= maskbits.BAD
    flags[~np.isfinite(data)] |= maskbits.NOT_FINITE
    qa, det = measure_qa(data, flags, pixel_scale, None)
    qa.update({"expid": expid, "ccd": ccd, "backend": backend, "wcs": {"status": "skipped", "reason": f"{backend} WCS kept"},
               **(extra_qa or {})})
    o = det.sources
    try:
        ra, dec = WCS(header).all_pix2world(o["x"], o["y"], 0) if len(o) else (np.array([]), np.array([]))
    except (ValueError, KeyError):
        ra = dec = np.full(len(o), np.nan)
    catalog = Table({"x": o["x"] + 1, "y": o["y"] + 1, "ra": ra, "dec": dec, "flux": o["flux"], "peak": o["peak"],
                     "a": o["a"], "b": o["b"], "theta": o["theta"], "fwhm": det.fwhm_px * pixel_scale, "flag": o["flag"]})
    catalog.meta["EXPID"], catalog.meta["CCD"] = expid, ccd
    timings = {"qa": time.perf_counter() - t}
    header["DWFCAL"] = (f"{backend} via dwfhpc", "calibrated by")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / v for k, v in product_names(expid, ccd).items()}
    write_image(paths["cal"], data, header, qlevel)
    write_mask(paths["mask"], flags, header)
    write_catalog(paths["cat"], catalog)
    write_qa(paths["qa"], qa)
    return CalibrationOutput(products=paths, qa=qa, wcs=qa["wcs"], timings=timings)


def products_from_dir(out_dir: Path, expid: str, ccd: int, timings: dict | None = None) -> CalibrationOutput:
    """The four products a containerised ``dwfhpc calibrate`` left in ``out_dir`` (QA read back from its JSON)."""
    import json

    paths = {k: out_dir / v for k, v in product_names(expid, ccd).items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise DwfError(f"the calibration step did not write {', '.join(missing)}", out_dir)
    qa = json.loads(paths["qa"].read_text())
    return CalibrationOutput(products=paths, qa=qa, wcs=qa.get("wcs", {}), timings=dict(timings or {}))
