"""Read one raw CCD (pixels + merged header) from a per-CCD file or a multi-extension exposure."""

from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
from astropy.io import fits

from ..errors import FitsFormatError
from ..instruments import Instrument, read_ccd_headers


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
