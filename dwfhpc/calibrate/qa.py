"""Quality figures of a calibrated CCD with sep: sky, noise, seeing, ellipticity, sources, saturation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sep

from . import maskbits

sep.set_extract_pixstack(2_000_000)


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
