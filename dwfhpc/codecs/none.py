"""No compression: the member is the single-CCD raw FITS itself."""

from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
from astropy.io import fits

from .base import RAW_DTYPE, Codec, write_raw_fits


class NoCodec(Codec):
    name = "none"
    suffix = ".fits"
    lossless = True

    def compress(self, header: fits.Header, data: np.ndarray, out: Path) -> None:
        write_raw_fits(out, header, data)

    def decompress(self, member: Path) -> np.ndarray:
        with fitsio.FITS(str(member)) as f:
            return f[0].read().astype(RAW_DTYPE, copy=False)
