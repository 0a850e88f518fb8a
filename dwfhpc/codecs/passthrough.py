"""``passthrough``: a CCD that is already losslessly tile-compressed travels as its own bytes.

DECam writes raws fpack'd (RICE_1 per HDU); decompressing and compressing them again costs CPU
and gains nothing. A pass-through member is the CCD's compressed binary-table HDU copied byte for
byte from the raw file (header + data blocks, found from the headers' announced sizes, never
decompressed), behind a minimal primary HDU::

    HDU 0  SIMPLE/BITPIX=8/NAXIS=0/EXTEND, DWFCODEC='passthrough', DWFZCMP (its ZCMPTYPE),
           DWFSRCHD (its HDU index in the raw), DWFDSUM (its DATASUM as computed when copied)
    HDU 1  the raw's compressed HDU, unchanged (so its own CHECKSUM/DATASUM, when the camera or
           fpack wrote them, still hold)

Eligible HDUs: ``ZIMAGE = T``, a lossless integer algorithm (RICE_1, GZIP_1/2, PLIO_1,
HCOMPRESS_1 with SCALE 0, NOCOMPRESS), ``ZBITPIX = 16`` with ``BZERO = 32768`` and ``BSCALE = 1``
(unsigned 16-bit ADU, what every other codec restores), 2 axes, ``ZQUANTIZ`` absent or ``NONE``.

On the node :meth:`PassthroughCodec.decompress` first checks the member's structure and its data
sums: the compressed HDU's own DATASUM (and CHECKSUM) when present, and DWFDSUM always. A tile
damaged before the member was hashed at the telescope (in the raw, or between reading and hashing)
is an :class:`~dwfhpc.errors.IntegrityError` naming the member; then cfitsio decompresses it.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np
from astropy.io import fits

from ..errors import DwfError, FitsFormatError, IntegrityError
from ..fitscards import CARD, parse_card, split_cards
from .base import RAW_DTYPE, Codec, fitsio_records

BLOCK = 2880

#: tile-compression algorithms that are lossless on integer pixels
LOSSLESS_ALGORITHMS = ("RICE_1", "RICE_ONE", "GZIP_1", "GZIP_2", "PLIO_1", "HCOMPRESS_1", "NOCOMPRESS")

_KEEP = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "ZIMAGE", "ZCMPTYPE", "ZBITPIX", "ZNAXIS",
         "ZQUANTIZ", "BZERO", "BSCALE", "CHECKSUM", "DATASUM", "DWFCODEC", "DWFDSUM", "DWFZCMP", "EXTNAME"}


@dataclass(frozen=True)
class HduSpan:
    """Where one HDU lies in a file, and the few header values the pass-through path needs."""

    index: int
    header_start: int
    data_start: int
    data_bytes: int  # announced, before padding
    end: int  # end of the padded data: the next HDU starts here
    cards: dict

    def get(self, key: str, default=None):
        return self.cards.get(key, default)


def _wanted(key: str) -> bool:
    return key in _KEEP or key.startswith(("NAXIS", "ZNAXIS", "ZNAME", "ZVAL"))


def scan_hdus(path: str | os.PathLike[str], data: bytes | None = None) -> list[HduSpan]:
    """Every HDU of a FITS file (or of its bytes ``data``), from the headers alone: no data is read.

    Raises :class:`FitsFormatError` naming ``path`` for a file that is not FITS or is cut short.
    """
    path = Path(path)
    spans: list[HduSpan] = []
    fh = None if data is not None else open(path, "rb")
    try:
        size = len(data) if data is not None else os.fstat(fh.fileno()).st_size

        def read(offset: int, n: int) -> bytes:
            if data is not None:
                return data[offset:offset + n]
            fh.seek(offset)
            return fh.read(n)

        offset = 0
        while offset < size:
            start = offset
            cards: dict = {}
            done = False
            while not done:
                block = read(offset, BLOCK)
                if len(block) < BLOCK:
                    raise FitsFormatError(f"truncated header of HDU {len(spans)}", path)
                offset += BLOCK
                for key, card in split_cards(block.decode("ascii", errors="replace")):
                    if key == "END":
                        done = True
                        break
                    if key not in cards and _wanted(key) and (value := parse_card(card)[1]) is not None:
                        cards[key] = value
            first = "SIMPLE" if not spans else "XTENSION"
            if first not in cards:
                raise FitsFormatError(f"HDU {len(spans)} does not start with {first}", path)
            try:
                naxis = int(cards.get("NAXIS", 0))
                count = 0
                if naxis:
                    count = 1
                    for i in range(1, naxis + 1):
                        count *= int(cards[f"NAXIS{i}"])
                nbytes = abs(int(cards["BITPIX"])) // 8 * int(cards.get("GCOUNT", 1)) * (int(cards.get("PCOUNT", 0))
                                                                                         + count)
            except (KeyError, TypeError, ValueError) as exc:
                raise FitsFormatError(f"HDU {len(spans)} has no valid size cards ({exc})", path) from None
            end = offset + -(-nbytes // BLOCK) * BLOCK
            if end > size:
                raise FitsFormatError(f"truncated: HDU {len(spans)} needs {end} bytes, the file has {size}", path)
            spans.append(HduSpan(len(spans), start, offset, nbytes, end, cards))
            offset = end
    finally:
        if fh is not None:
            fh.close()
    return spans


def not_passthrough(span: HduSpan) -> str | None:
    """Why this HDU cannot travel as its own bytes (None: it can)."""
    if span.get("XTENSION") != "BINTABLE" or span.get("ZIMAGE") is not True:
        return "not a tile-compressed image"
    algorithm = str(span.get("ZCMPTYPE", "")).strip().upper()
    if algorithm not in LOSSLESS_ALGORITHMS:
        return f"ZCMPTYPE {algorithm or None!r} is not a lossless algorithm"
    if span.get("ZBITPIX") != 16:
        return f"ZBITPIX {span.get('ZBITPIX')!r} is not 16 (16-bit raw ADU)"
    if span.get("BZERO") != 32768 or span.get("BSCALE", 1) not in (1, 1.0):
        return f"BZERO/BSCALE {span.get('BZERO')!r}/{span.get('BSCALE', 1)!r} are not 32768/1 (unsigned 16-bit)"
    if str(span.get("ZQUANTIZ", "NONE")).strip().upper() != "NONE":
        return f"ZQUANTIZ {span.get('ZQUANTIZ')!r} (quantised)"
    if span.get("ZNAXIS") != 2 or not all(isinstance(span.get(f"ZNAXIS{i}"), int) and span.get(f"ZNAXIS{i}") > 0
                                          for i in (1, 2)):
        return "not a 2-D image (ZNAXIS)"
    if algorithm == "HCOMPRESS_1":
        for i in range(1, 10):
            if str(span.get(f"ZNAME{i}", "")).strip().upper() == "SCALE" and span.get(f"ZVAL{i}") not in (0, 0.0):
                return f"HCOMPRESS_1 with SCALE {span.get(f'ZVAL{i}')!r} (lossy)"
    if span.get("GCOUNT", 1) != 1:
        return "GCOUNT is not 1"
    return None


def zcmptype(span: HduSpan) -> str:
    return str(span.get("ZCMPTYPE", "")).strip().upper()


def image_shape(span: HduSpan) -> list[int]:
    """[ny, nx] of the decompressed image (ZNAXIS2, ZNAXIS1)."""
    return [int(span.get("ZNAXIS2")), int(span.get("ZNAXIS1"))]


def data_sum(buf: bytes | memoryview) -> int:
    """The FITS 32-bit ones' complement sum of ``buf`` (a multiple of 4 bytes): the DATASUM of a data unit."""
    total = int(np.frombuffer(buf, dtype=">u4").sum(dtype=np.uint64))
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def _ones_add(a: int, b: int) -> int:
    total = a + b
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def _card(key: str, value, comment: str) -> str:
    if isinstance(value, bool):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, int):
        text = f"{value:>20d}"
    else:
        quoted = str(value).replace("'", "''")
        text = f"'{quoted:<8}'"
    card = f"{key:<8}= {text} / {comment}"
    return card[:CARD].ljust(CARD)


def _primary(algorithm: str, source_hdu: int, dsum: int) -> bytes:
    cards = [_card("SIMPLE", True, "conforms to FITS standard"),
             _card("BITPIX", 8, "no data"),
             _card("NAXIS", 0, "no data"),
             _card("EXTEND", True, "the CCD is HDU 1"),
             _card("DWFCODEC", "passthrough", "dwfhpc member: HDU 1 copied from the raw"),
             _card("DWFZCMP", algorithm, "tile compression of HDU 1 (its ZCMPTYPE)"),
             _card("DWFSRCHD", source_hdu, "HDU index of HDU 1 in the raw file"),
             _card("DWFDSUM", str(dsum), "DATASUM of HDU 1 when it was copied"),
             "END".ljust(CARD)]
    text = "".join(cards)
    return (text + " " * (-len(text) % BLOCK)).encode("ascii")


def copy_member(raw: str | os.PathLike[str], span: HduSpan, out: str | os.PathLike[str]) -> tuple[int, str]:
    """Write the pass-through member of HDU ``span`` of ``raw`` to ``out``; returns its (bytes, sha256).

    Reads the HDU's bytes once (no decompression); its data sum (DWFDSUM) and the member's sha256
    are computed from those bytes in memory.
    """
    reason = not_passthrough(span)
    if reason:
        raise FitsFormatError(f"HDU {span.index} cannot be passed through: {reason}", raw)
    with open(raw, "rb") as fh:
        fh.seek(span.header_start)
        hdu = fh.read(span.end - span.header_start)
    if len(hdu) != span.end - span.header_start:
        raise FitsFormatError(f"truncated: HDU {span.index} ends at {span.end}, the file is shorter", raw)
    dsum = data_sum(memoryview(hdu)[span.data_start - span.header_start:])
    primary = _primary(zcmptype(span), span.index, dsum)
    digest = hashlib.sha256(primary)
    digest.update(hdu)
    with open(out, "wb") as fh:
        fh.write(primary)
        fh.write(hdu)
    return len(primary) + len(hdu), digest.hexdigest()


def verify_member(member: str | os.PathLike[str]) -> HduSpan:
    """The compressed HDU of a pass-through member, after checking its structure and data sums.

    Raises :class:`IntegrityError` naming the member when the structure is not a primary + one
    eligible compressed HDU, or when DATASUM, CHECKSUM (of HDU 1, when present) or DWFDSUM disagree
    with the bytes: a damaged tile or header.
    """
    member = Path(member)
    data = member.read_bytes()
    try:
        spans = scan_hdus(member, data)
    except FitsFormatError as exc:
        raise IntegrityError(f"passthrough member is not a whole FITS file ({exc.problem})", member) from None
    if len(spans) != 2 or spans[1].end != len(data):
        raise IntegrityError(f"passthrough member has {len(spans)} HDU(s), not a primary + one compressed HDU", member)
    primary, hdu = spans
    reason = not_passthrough(hdu)
    if reason:
        raise IntegrityError(f"passthrough member HDU 1: {reason}", member)
    dsum = data_sum(memoryview(data)[hdu.data_start:hdu.end])
    expected = {"DATASUM": hdu.get("DATASUM"), "DWFDSUM": primary.get("DWFDSUM")}
    checked = 0
    for key, value in expected.items():
        if value is None or str(value).strip() == "":
            continue
        try:
            want = int(str(value).strip())
        except ValueError:
            raise IntegrityError(f"passthrough member: {key} {value!r} is not a number", member) from None
        if want != dsum:
            raise IntegrityError(f"{zcmptype(hdu)} tile data damaged: {key} of HDU 1 is {want}, the data sum to "
                                 f"{dsum}", member)
        checked += 1
    if not checked:
        raise IntegrityError("passthrough member carries no DATASUM or DWFDSUM to verify its tiles", member)
    if str(hdu.get("CHECKSUM", "")).strip() not in ("", "0000000000000000"):
        total = _ones_add(data_sum(memoryview(data)[hdu.header_start:hdu.data_start]), dsum)
        if total != 0xFFFFFFFF:
            raise IntegrityError("HDU 1 fails its CHECKSUM (header damaged)", member)
    return hdu


class PassthroughCodec(Codec):
    """The raw's own lossless tile-compressed HDU, copied; bit-exact by construction."""

    name = "passthrough"
    suffix = ".fits.fz"
    lossless = True

    def compress(self, header: fits.Header, data: np.ndarray, out: Path) -> None:
        """From pixels (not the packing path): RICE_1 tiles with their CHECKSUM, in the member layout."""
        out = Path(out)
        tmp = out.with_name(out.name + ".rice")
        try:
            with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
                f.write(np.ascontiguousarray(data, dtype=RAW_DTYPE), header=fitsio_records(header), compress="RICE",
                        tile_dims=[1, data.shape[1]])
                f[1].write_checksum()
            copy_member(tmp, scan_hdus(tmp)[1], out)
        finally:
            tmp.unlink(missing_ok=True)

    def decompress(self, member: Path) -> np.ndarray:
        verify_member(member)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fitsio.FITS(str(member)) as f:
                    data = f[1].read()
        except (OSError, ValueError, RuntimeError) as exc:  # sums agree, yet cfitsio cannot decode: still the member
            raise IntegrityError(f"passthrough member: tiles cannot be decompressed ({exc})", member) from None
        if data is None or data.ndim != 2:
            raise IntegrityError("passthrough member HDU 1 holds no 2-D image", member)
        return data.astype(RAW_DTYPE, copy=False)


def check_passthrough(raw: str | os.PathLike[str], span: HduSpan, ccd: int) -> None:
    """Raise :class:`DwfError` naming ``raw`` and the CCD when its HDU cannot be passed through."""
    reason = not_passthrough(span)
    if reason:
        raise DwfError(f"codec passthrough: CCD {ccd} (HDU {span.index}) {reason}; use --codec auto or rice", raw)
