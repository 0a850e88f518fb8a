"""Read one raw CCD (pixels + merged header) from a per-CCD file or a multi-extension exposure.

Uncompressed images (the node's decompressed CCD in scratch, the float32 masters) are read
straight from the file into a reusable per-thread buffer (:func:`workspace`) and byte-swapped in
place: no temporary array, no fresh pages to fault in for every CCD of a warm process. Anything
else (tile-compressed HDUs, other types) goes through fitsio.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import fitsio
import numpy as np
from astropy.io import fits

from ..errors import DwfError, FitsFormatError
from ..instruments import Instrument, detect, read_ccd_headers

_SHORT_IMG, _USHORT_IMG, _FLOAT_IMG = 16, 20, -32  # cfitsio image types
_local = threading.local()


def workspace(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A per-thread buffer kept between calls (contents undefined): the same pages CCD after CCD.

    Only for arrays that do not outlive the call that asked for them.
    """
    buffers: dict = _local.__dict__.setdefault("buffers", {})
    dtype = np.dtype(dtype)
    buf = buffers.get(name)
    if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
        buf = buffers[name] = np.empty(shape, dtype)
    return buf


def release_workspace() -> None:
    """Drop this thread's buffers (e.g. before a long idle period)."""
    _local.__dict__.pop("buffers", None)


def read_raw_ccds(path: str | Path, ccds: list[int] | None = None,
                  instrument: Instrument | None = None) -> tuple[Instrument, list[tuple[int, fits.Header, int]]]:
    """(instrument, [(ccd, merged header, HDU index)]) of the science CCDs in ``path``."""
    inst, _, headers = read_ccd_headers(path, instrument, ccds)
    if not headers:
        raise FitsFormatError(f"no science CCD{'s ' + str(ccds) if ccds else 's'} in the file", path)
    return inst, [(h.ccd, h.header, h.hdu) for h in headers]


def raw_ccd_number(header: fits.Header, ccd: int | None = None, instrument: Instrument | None = None,
                   path: str | Path | None = None) -> tuple[Instrument, int]:
    """(instrument, CCD) of a single-CCD raw's header held in memory: what :func:`read_raw_ccds` finds in such a file."""
    inst = instrument or detect(header, path)
    number = inst.ccd_number(header, path)
    if number is None or number not in inst.science_ccds or (ccd is not None and number != ccd):
        raise FitsFormatError(f"no science CCD{'s ' + str([ccd]) if ccd is not None else 's'} in the file", path)
    return inst, number


def _read_plain(path: str | Path, info: dict, dtype: str, buffer: str) -> np.ndarray:
    """An uncompressed big-endian image read into workspace ``buffer`` and made native in place."""
    shape = tuple(int(n) for n in info["dims"])
    out = workspace(buffer, shape, dtype)
    with open(path, "rb") as fh:
        fh.seek(int(info["data_start"]))
        if fh.readinto(memoryview(out).cast("B")) != out.nbytes:
            raise FitsFormatError("truncated image data", path)
    if sys.byteorder == "little":
        out.byteswap(inplace=True)
    return out


def read_pixels(path: str | Path, hdu: int, *, buffer: str | None = None) -> np.ndarray:
    """The 2-D image of ``hdu``; with ``buffer``, an uncompressed 16-bit raw lands in that workspace buffer."""
    try:
        with fitsio.FITS(str(path)) as f:
            info = f[hdu].get_info()
            plain = (buffer is not None and not info["is_compressed_image"] and info["ndims"] == 2
                     and info["img_type"] == _SHORT_IMG and info["img_equiv_type"] in (_SHORT_IMG, _USHORT_IMG))
            data = None if plain else f[hdu].read()
    except (OSError, ValueError) as exc:
        raise FitsFormatError(f"cannot read pixels of HDU {hdu} ({exc})", path) from None
    if plain:
        data = _read_plain(path, info, "<i2" if sys.byteorder == "little" else ">i2", buffer)
        if info["img_equiv_type"] == _USHORT_IMG:  # BZERO 32768: flipping the sign bit adds it exactly
            data = data.view(np.uint16)
            data ^= np.uint16(0x8000)
        return data
    if data is None or data.ndim != 2:
        raise FitsFormatError(f"HDU {hdu} holds no 2-D image", path)
    return data


def read_master_pixels(path: str | Path, *, buffer: str) -> np.ndarray:
    """A master calibration's float32 pixels (primary HDU) in workspace ``buffer``.

    Same values as :func:`dwfhpc.calibrate.masters.read_master`; an uncompressed float32 master
    is read straight into the buffer.
    """
    p = Path(path)
    if not p.is_file():
        raise DwfError("master calibration file is missing", p)
    try:
        with fitsio.FITS(str(p)) as f:
            info = f[0].get_info()
            hdr = f[0].read_header()
            plain = (not info["is_compressed_image"] and info["ndims"] == 2 and info["img_type"] == _FLOAT_IMG
                     and float(hdr.get("BSCALE", 1.0)) == 1.0 and float(hdr.get("BZERO", 0.0)) == 0.0)
            data = None if plain else f[0].read()
    except (OSError, ValueError) as exc:
        raise DwfError(f"unreadable master calibration ({exc})", p) from None
    if plain:
        return _read_plain(p, info, "<f4" if sys.byteorder == "little" else ">f4", buffer)
    if data is None or data.ndim != 2:
        raise DwfError("master calibration holds no 2-D image", p)
    out = workspace(buffer, data.shape, np.float32)
    np.copyto(out, data, casting="unsafe")
    return out
