"""Codecs for one CCD: ``passthrough``, ``jp2``, ``jp2-lossless``, ``rice``, ``rice-q``, ``none``, behind one interface.

:func:`get_codec` builds one; :func:`decompress_member` turns any member back into a complete,
self-describing single-CCD raw FITS file (merged primary + extension header, uint16 ADU stored
as int16 with BZERO 32768, pixels bit-exact for the lossless codecs).

``passthrough`` (:mod:`.passthrough`) is the raw's own lossless tile-compressed HDU copied as it
is; ``auto`` (a packing choice, never a manifest's codec) is ``passthrough`` when every CCD of the
exposure allows it, else ``rice``: see :func:`resolve_codec`.
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
from .passthrough import HduSpan, PassthroughCodec, not_passthrough
from .rice import RiceCodec, RiceQuantisedCodec

#: codecs a manifest may name
CODEC_NAMES = ("passthrough", "jp2", "jp2-lossless", "rice", "rice-q", "none")
AUTO = "auto"
#: what a config or ``--codec`` may ask for: a codec, or ``auto``
CODEC_CHOICES = (AUTO, *CODEC_NAMES)
# The telescope default: the raw's own lossless tiles when it has them, else lossless rice
# (benchmarks/results/codecs.md has the figures behind rice).
DEFAULT_CODEC = AUTO
FALLBACK_CODEC = "rice"
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
    if name == "passthrough":
        return PassthroughCodec()
    raise DwfError(f"unknown codec {name!r} (known: {', '.join(CODEC_NAMES)})")


def resolve_codec(name: str, hdus: list[HduSpan]) -> str:
    """The codec to pack with: ``auto`` is ``passthrough`` when every HDU in ``hdus`` allows it, else ``rice``."""
    if name != AUTO:
        return name
    return "passthrough" if hdus and not any(not_passthrough(h) for h in hdus) else FALLBACK_CODEC


def decompress_member(member: str | os.PathLike[str], out_fits: str | os.PathLike[str], *,
                      codec: str, header: fits.Header, params: dict | None = None) -> Path:
    """Decompress ``member`` (made by ``codec``) into a complete single-CCD raw FITS at ``out_fits``.

    ``header`` is the merged CCD header from the part manifest; the codec and its parameters are
    recorded in it (DWFCODEC ...). Written through a temporary name. A ``passthrough`` member whose
    tiles fail their data sums raises :class:`~dwfhpc.errors.IntegrityError` naming ``member``.
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


__all__ = ["AUTO", "CODEC_CHOICES", "CODEC_NAMES", "DEFAULT_CODEC", "FALLBACK_CODEC", "resolve_codec",
           "DEFAULT_QLEVEL", "DEFAULT_RATIO", "RAW_DTYPE", "Codec",
           "get_codec", "decompress_member", "write_raw_fits"]
