"""FITS tile compression through fitsio: ``rice`` (lossless) and ``rice-q`` (quantised float)."""

from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
from astropy.io import fits

from .base import RAW_DTYPE, Codec, fitsio_records


class RiceCodec(Codec):
    """Lossless RICE_1 on the raw 16-bit integers: bit-exact."""

    name = "rice"
    suffix = ".fits.fz"
    lossless = True

    def compress(self, header: fits.Header, data: np.ndarray, out: Path) -> None:
        with fitsio.FITS(str(out), "rw", clobber=True) as f:
            f.write(np.ascontiguousarray(data, dtype=RAW_DTYPE), header=fitsio_records(header),
                    compress="RICE", tile_dims=[1, data.shape[1]])

    def decompress(self, member: Path) -> np.ndarray:
        with fitsio.FITS(str(member)) as f:
            return f[1].read().astype(RAW_DTYPE, copy=False)


class RiceQuantisedCodec(Codec):
    """RICE_1 on float32 pixels quantised to (noise / qlevel) with SUBTRACTIVE_DITHER_2.

    Quantisation adds noise of about sigma / (qlevel * sqrt(12)); the dither seed is fixed so the
    same input always gives the same bytes. Decompression rounds back to 16-bit integers.
    """

    name = "rice-q"
    suffix = ".fits.fz"
    lossless = False

    def __init__(self, qlevel: float = 4.0, dither_seed: int = 1):
        self.qlevel = float(qlevel)
        self.dither_seed = int(dither_seed)

    def params(self) -> dict:
        return {"qlevel": self.qlevel}

    def compress(self, header: fits.Header, data: np.ndarray, out: Path) -> None:
        with fitsio.FITS(str(out), "rw", clobber=True) as f:
            f.write(data.astype(np.float32), header=fitsio_records(header), compress="RICE",
                    tile_dims=[1, data.shape[1]], qlevel=self.qlevel, qmethod="SUBTRACTIVE_DITHER_2",
                    dither_seed=self.dither_seed)

    def decompress(self, member: Path) -> np.ndarray:
        with fitsio.FITS(str(member)) as f:
            values = f[1].read()
        return np.clip(np.rint(values), 0, 65535).astype(RAW_DTYPE)
