"""JPEG2000 through glymur: irreversible 9/7 at a target ratio, or reversible 5/3 (lossless).

glymur writes only uint8/uint16, which is exactly the raw ADU range (int16 + BZERO 32768).
The header does not travel inside the JPEG2000 file; it goes in the part manifest. glymur is imported
only when a JPEG2000 member is made or read (its import costs ~80 ms every node task would pay).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from ..errors import DwfError
from .base import RAW_DTYPE, Codec


def _glymur(threads: int):
    """glymur, after checking its OpenJPEG (>= 2.4) and setting its thread count."""
    import glymur

    version = glymur.version.openjpeg_version
    if tuple(int(x) for x in version.split(".")[:2]) < (2, 4):
        raise DwfError(f"JPEG2000 needs OpenJPEG >= 2.4 (found {version}): apt-get install libopenjp2-7")
    glymur.set_option("lib.num_threads", threads)
    return glymur


class Jp2Codec(Codec):
    name = "jp2"
    suffix = ".jp2"
    lossless = False

    def __init__(self, ratio: float = 10.0, threads: int = 2, lossless: bool = False):
        self.ratio = float(ratio)
        self.threads = int(threads)
        self.lossless = lossless
        if lossless:
            self.name = "jp2-lossless"

    def params(self) -> dict:
        return {} if self.lossless else {"ratio": self.ratio}

    def compress(self, header: fits.Header, data: np.ndarray, out: Path) -> None:
        glymur = _glymur(self.threads)
        pixels = np.ascontiguousarray(data, dtype=RAW_DTYPE)
        if self.lossless:
            glymur.Jp2k(str(out), data=pixels, irreversible=False)
        else:
            glymur.Jp2k(str(out), data=pixels, irreversible=True, cratios=[self.ratio])

    def decompress(self, member: Path) -> np.ndarray:
        glymur = _glymur(self.threads)
        return np.asarray(glymur.Jp2k(str(member))[:], dtype=RAW_DTYPE)
