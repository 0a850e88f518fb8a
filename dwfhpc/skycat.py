"""The simulated sky: a star catalog fixed by the pointing (the simulator draws it; tests and the WCS check read
it as the reference catalog)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from .atomic import atomic_path


@dataclass(frozen=True)
class StarCatalog:
    ra: np.ndarray
    dec: np.ndarray
    mag: np.ndarray


def field_seed(ra: float, dec: float) -> int:
    """A seed fixed by the pointing, so every exposure of a field sees the same sky."""
    return int.from_bytes(hashlib.sha256(f"{ra:.5f},{dec:.5f}".encode()).digest()[:4], "little")


def make_star_catalog(ra0: float, dec0: float, *, radius_deg: float = 1.6, density_per_deg2: float = 8000.0,
                      mag_range: tuple[float, float] = (12.5, 23.0), seed: int | None = None) -> StarCatalog:
    """Stars uniform on the sphere in a cap around (ra0, dec0); counts rise 10**(0.3 m) to faint magnitudes."""
    rng = np.random.default_rng(field_seed(ra0, dec0) if seed is None else seed)
    area = 2 * np.pi * (1 - np.cos(np.radians(radius_deg))) * (180 / np.pi) ** 2
    n = rng.poisson(density_per_deg2 * area)
    # uniform in the cap: cos(theta) uniform
    cos_t = rng.uniform(np.cos(np.radians(radius_deg)), 1.0, n)
    theta = np.arccos(cos_t)
    phi = rng.uniform(0, 2 * np.pi, n)
    # offsets in a frame centred on the pole, rotated to (ra0, dec0)
    x = np.sin(theta) * np.cos(phi)
    y = np.sin(theta) * np.sin(phi)
    z = np.cos(theta)
    d0 = np.radians(dec0)
    # rotate pole (0,0,1) to (ra0, dec0)
    xr = x * np.sin(d0) + z * np.cos(d0)
    zr = -x * np.cos(d0) + z * np.sin(d0)
    ra = (np.degrees(np.arctan2(y, xr)) + ra0) % 360.0
    dec = np.degrees(np.arcsin(np.clip(zr, -1, 1)))
    lo, hi = mag_range
    u = rng.uniform(0, 1, n)
    k = 0.3 * np.log(10)
    mag = np.log(np.exp(k * lo) + u * (np.exp(k * hi) - np.exp(k * lo))) / k
    return StarCatalog(ra, dec, mag)


def write_star_catalog(path: str | os.PathLike[str], catalog: StarCatalog) -> Path:
    """Write the catalog as a FITS table (ra, dec, mag) usable as a reference catalog."""
    t = Table({"ra": catalog.ra, "dec": catalog.dec, "mag": catalog.mag.astype(np.float32)})
    t.meta["CATALOG"] = "dwfhpc simulated stars"
    with atomic_path(path) as tmp:
        tmp.unlink()
        t.write(tmp, format="fits")
    return Path(path)
