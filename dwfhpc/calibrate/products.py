"""Write the four products of a calibrated CCD, each through a temporary name."""

from __future__ import annotations

import json
from pathlib import Path

import fitsio
import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..atomic import atomic_path
from ..codecs.base import fitsio_records
from . import maskbits


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
