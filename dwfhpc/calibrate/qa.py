"""Quality figures of a calibrated CCD with sep: sky, noise, seeing, ellipticity, sources, saturation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sep

from . import maskbits
from .rawio import workspace

#: sep's buffer of active pixels above the threshold: allocated (and its pages touched) on every
#: extraction, so start with sep's default and retry with the large one only when a crowded or
#: bright CCD overflows it (the detections do not depend on the buffer size)
PIXSTACK, PIXSTACK_LARGE = 300_000, 2_000_000


def _extract(data: np.ndarray, threshold: float, **kwargs) -> np.ndarray:
    for stack in (PIXSTACK, PIXSTACK_LARGE):
        sep.set_extract_pixstack(stack)
        try:
            return sep.extract(data, threshold, **kwargs)
        except Exception as exc:  # sep raises a bare Exception when its pixel buffer is full
            if stack == PIXSTACK_LARGE or "pixel buffer full" not in str(exc):
                raise
    raise AssertionError("unreachable")


@dataclass
class Detection:
    sources: np.ndarray  # sep catalog (structured array)
    fwhm_px: np.ndarray  # per source
    background: float
    noise: float


def _all_finite(data: np.ndarray) -> bool:
    """One pass, no temporary: a float64 sum of float32 values is finite unless a value is not."""
    return bool(np.isfinite(np.add.reduce(data, axis=None, dtype=np.float64)))


def detect(image: np.ndarray, mask: np.ndarray, threshold: float = 5.0) -> Detection:
    """Background-subtracted sep extraction on good pixels (masked pixels ignored).

    Works on one reusable copy of the image (masked pixels zeroed, then the background subtracted
    in place); ``image`` and ``mask`` are not modified.
    """
    data = np.ascontiguousarray(image, dtype=np.float32)
    bad = workspace("qa.bad", data.shape, bool)
    np.not_equal(mask, 0, out=bad)
    if not _all_finite(data):
        bad |= ~np.isfinite(data)
    work = workspace("qa.work", data.shape, np.float32)
    np.copyto(work, data)
    np.copyto(work, np.float32(0), where=bad)
    bkg = sep.Background(work, mask=bad, bw=128, bh=128)
    bkg.subfrom(work)
    objects = _extract(work, threshold, err=bkg.globalrms, mask=bad, minarea=5, deblend_cont=0.005)
    # FWHM from the half-light radius (exact for a Gaussian: FWHM = 2 r_50); sep's a, b are
    # second moments above the threshold and underestimate it
    if len(objects):
        r50, _ = sep.flux_radius(work, objects["x"], objects["y"], np.clip(10.0 * objects["a"], 10, 60), 0.5,
                                 subpix=5)
        fwhm = 2.0 * r50
    else:
        fwhm = np.zeros(0)
    return Detection(objects, fwhm, float(bkg.globalback), float(bkg.globalrms))


def bit_fractions(mask: np.ndarray, bits: dict[str, int]) -> dict[str, float]:
    """Fraction of pixels with each bit set; one histogram pass for 8-bit masks."""
    if mask.size == 0:
        return {k: 0.0 for k in bits}
    if mask.dtype == np.uint8:
        counts = np.bincount(mask.ravel(), minlength=256)
        values = np.arange(256)
        return {k: float(counts[(values & b) != 0].sum() / mask.size) for k, b in bits.items()}
    return {k: float(np.count_nonzero(mask & b) / mask.size) for k, b in bits.items()}


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
    """QA figures and the detections, from the arrays in memory."""
    det = detect(image, mask)
    good = stars(det, saturate, image.shape)
    o = det.sources
    fwhm = float(np.median(det.fwhm_px[good]) * pixel_scale) if len(good) else None
    ell = float(np.median(1 - o["b"][good] / o["a"][good])) if len(good) else None
    fractions = bit_fractions(mask, {"saturated": maskbits.SATURATED, "bad": maskbits.BAD})
    qa = {
        "sky": det.background,
        "sky_noise": det.noise,
        "fwhm_arcsec": fwhm,
        "ellipticity": ell,
        "n_sources": int(len(o)),
        "n_stars": int(len(good)),
        "saturated_fraction": fractions["saturated"],
        "bad_fraction": fractions["bad"],
        "pixel_scale": pixel_scale,
    }
    return qa, det
