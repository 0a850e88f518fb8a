"""Codecs for one CCD: ``jp2``, ``jp2-lossless``, ``rice``, ``rice-q``, ``none``, behind one interface.

:func:`get_codec` builds one; :func:`decompress_member` turns any member back into a complete,
self-describing single-CCD raw FITS file (merged primary + extension header, uint16 ADU stored
as int16 with BZERO 32768, pixels bit-exact for the lossless codecs).
"""

from __future__ import annotations

import os
from pathlib import Path

from astropy.io import fits

from ..atomic import atomic_path
from ..errors import DwfError
from .base import RAW_DTYPE, Codec, clean_header, write_raw_fits
from .jp2 import Jp2Codec
from .none import NoCodec
from .rice import RiceCodec, RiceQuantisedCodec

CODEC_NAMES = ("jp2", "jp2-lossless", "rice", "rice-q", "none")
# The telescope default: see benchmarks/results/codecs.md for the figures behind it.
DEFAULT_CODEC = "rice"
DEFAULT_QLEVEL = 4.0
DEFAULT_RATIO = 10.0


def get_codec(name: str, *, ratio: float = DEFAULT_RATIO, qlevel: float = DEFAULT_QLEVEL, threads: int = 2) -> Codec:
    if name == "jp2":
        return Jp2Codec(ratio=ratio, threads=threads)
    if name == "jp2-lossless":
        return Jp2Codec(threads=threads, lossless=True)
    if name == "rice":
        return RiceCodec()
    if name == "rice-q":
        return RiceQuantisedCodec(qlevel=qlevel)
    if name == "none":
        return NoCodec()
    raise DwfError(f"unknown codec {name!r} (known: {', '.join(CODEC_NAMES)})")


def decompress_member(member: str | os.PathLike[str], out_fits: str | os.PathLike[str], *,
                      codec: str, header: fits.Header, params: dict | None = None) -> Path:
    """Decompress ``member`` (made by ``codec``) into a complete single-CCD raw FITS at ``out_fits``.

    ``header`` is the merged CCD header from the part manifest; the codec and its parameters are
    recorded in it (DWFCODEC ...). Written through a temporary name.
    """
    member = Path(member)
    c = get_codec(codec, **(params or {}))
    try:
        data = c.decompress(member)
    except (OSError, ValueError, RuntimeError) as exc:
        raise DwfError(f"cannot decompress {codec} member ({exc})", member) from None
    h = clean_header(header)
    c.describe(h)
    with atomic_path(out_fits) as tmp:
        write_raw_fits(tmp, h, data)
    return Path(out_fits)


__all__ = ["CODEC_NAMES", "DEFAULT_CODEC", "DEFAULT_QLEVEL", "DEFAULT_RATIO", "RAW_DTYPE", "Codec",
           "get_codec", "decompress_member", "write_raw_fits"]
