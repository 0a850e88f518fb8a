"""The codec interface: one CCD's raw pixels + header in, one member file out, and back."""

from __future__ import annotations

import io
import warnings
from abc import ABC, abstractmethod
from pathlib import Path

import fitsio
import numpy as np
from astropy.io import fits

from ..fitsio_utils import STRUCTURAL

RAW_DTYPE = np.uint16  # DECam/HSC raw: int16 with BZERO 32768, i.e. unsigned 16-bit ADU


class Codec(ABC):
    """Compress a single raw CCD to a member file and restore it exactly (lossless) or closely (lossy)."""

    name: str = ""
    suffix: str = ""
    lossless: bool = True

    @abstractmethod
    def compress(self, header: fits.Header, data: np.ndarray, out: Path) -> None:
        """Write ``data`` (uint16 raw ADU) as a member file ``out``; ``header`` is the merged CCD header."""

    @abstractmethod
    def decompress(self, member: Path) -> np.ndarray:
        """The uint16 raw pixels of a member file."""

    def params(self) -> dict:
        return {}

    def describe(self, header: fits.Header) -> None:
        """Record in ``header`` which codec made the pixels (for the decompressed member)."""
        header["DWFCODEC"] = (self.name, "dwfhpc codec the pixels travelled with")
        for key, value in self.params().items():
            header[f"DWF{key[:5].upper()}"] = (value, f"dwfhpc codec parameter {key}")


def clean_header(header: fits.Header) -> fits.Header:
    """A header without structure cards, ready to go in front of new pixels."""
    out = fits.Header()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        for card in header.cards:
            if card.keyword in STRUCTURAL and card.keyword != "EXTNAME":
                continue
            out.append(card)
    return out


def fitsio_records(header: fits.Header) -> list[dict]:
    """astropy header -> fitsio header records (structure cards dropped, comments kept)."""
    records = []
    for card in clean_header(header).cards:
        if card.keyword in ("COMMENT", "HISTORY"):
            records.append({"name": card.keyword, "value": str(card.value)})
        elif card.keyword:
            records.append({"name": card.keyword, "value": card.value, "comment": card.comment})
    return records


def write_raw_fits(path: Path, header: fits.Header, data: np.ndarray) -> None:
    """A complete single-CCD raw FITS: primary HDU, int16 with BZERO 32768, the merged header."""
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(np.ascontiguousarray(data, dtype=RAW_DTYPE), header=fitsio_records(header))


def raw_fits_header(header: fits.Header, shape: tuple[int, int]) -> fits.Header:
    """The header of the file :func:`write_raw_fits` makes from ``header`` and pixels of ``shape``, as astropy
    reads it back, without writing the pixels anywhere.

    cfitsio formats the cards (float precision, long strings, comments) and adds its own, so the header is
    written by it into a memory file holding a 1 x 1 image; only NAXIS1/NAXIS2 are then set to ``shape``.
    """
    with fitsio.FITS("mem://", "rw") as f:
        f.write(np.zeros((1, 1), dtype=RAW_DTYPE), header=fitsio_records(header))
        raw = f.read_raw()
    with fits.open(io.BytesIO(raw), lazy_load_hdus=True) as hdul:
        out = hdul[0].header.copy()
    out["NAXIS2"], out["NAXIS1"] = (int(n) for n in shape)
    return out
