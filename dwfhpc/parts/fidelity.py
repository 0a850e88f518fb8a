"""How much a codec changes the pixels: ratio, speed, added noise and bright-star flux error."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sep

from ..codecs import get_codec
from ..instruments.base import CCDGeometry


@dataclass
class Fidelity:
    codec: str
    ratio: float  # raw 16-bit bytes / member bytes
    compress_mb_s: float
    decompress_mb_s: float
    added_noise: float  # RMS of (decoded - original) / sky sigma, data sections
    star_flux_error: float  # median |relative flux error| of the brightest unsaturated stars

    def row(self) -> str:
        return (f"{self.codec:13s} {self.ratio:6.2f} {self.compress_mb_s:9.1f} {self.decompress_mb_s:9.1f} "
                f"{self.added_noise:10.3f} {self.star_flux_error:10.2e}")


HEADER = f"{'codec':13s} {'ratio':>6s} {'comp MB/s':>9s} {'dec MB/s':>9s} {'noise/sky':>10s} {'star flux':>10s}"


def sky_sigma(data: np.ndarray, geometry: CCDGeometry) -> float:
    """Robust pixel noise (MAD) in the data sections, per amplifier (their bias levels differ), median."""
    sigmas = []
    for a in geometry.amps:
        values = data[a.data.slices].ravel()[::7].astype(float)
        sigmas.append(1.4826 * np.median(np.abs(values - np.median(values))))
    return float(np.median(sigmas))


def _star_fluxes(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    bkg = sep.Background(image)
    flux, _, _ = sep.sum_circle(image - bkg.back(), x, y, 6.0)
    return flux


def measure(codec_name: str, header, data: np.ndarray, geometry: CCDGeometry, work: Path, **params) -> Fidelity:
    """Round-trip one CCD through a codec and compare with the original."""
    codec = get_codec(codec_name, **params)
    member = work / f"fidelity{codec.suffix}"
    t = time.perf_counter()
    codec.compress(header, data, member)
    tc = time.perf_counter() - t
    size = member.stat().st_size
    t = time.perf_counter()
    back = codec.decompress(member)
    td = time.perf_counter() - t
    mb = data.nbytes / 1e6
    sigma = sky_sigma(data, geometry)
    diffs = np.concatenate([(back[a.data.slices].astype(float) - data[a.data.slices]).ravel() for a in geometry.amps])
    amp = geometry.amps[0]
    orig = np.ascontiguousarray(data[amp.data.slices], dtype=np.float32)
    dec = np.ascontiguousarray(back[amp.data.slices], dtype=np.float32)
    sat = amp.saturate or 60000
    objects = sep.extract(orig - sep.Background(orig).back(), 20.0, minarea=9)
    bright = objects[(objects["peak"] < 0.5 * sat) & (objects["npix"] > 20)]
    bright = bright[np.argsort(-bright["flux"])][:20]
    if len(bright):
        f0 = _star_fluxes(orig, bright["x"], bright["y"])
        f1 = _star_fluxes(dec, bright["x"], bright["y"])
        flux_err = float(np.median(np.abs(f1 / f0 - 1)))
    else:
        flux_err = float("nan")
    member.unlink(missing_ok=True)
    label = f"rice-q q={params.get('qlevel', 4):g}" if codec_name == "rice-q" else codec.name
    return Fidelity(label, data.nbytes / size, mb / tc, mb / td, float(np.sqrt(np.mean(diffs ** 2)) / sigma), flux_err)
