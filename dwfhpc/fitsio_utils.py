"""Small FITS helpers: safe opening with clear errors, section strings, merged headers."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

from .errors import FitsFormatError

_SECTION = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")

# Keywords that describe the HDU structure and must never be copied between HDUs.
STRUCTURAL = {
    "SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "PCOUNT", "GCOUNT",
    "NEXTEND", "BZERO", "BSCALE", "CHECKSUM", "DATASUM", "ZIMAGE", "ZBITPIX", "ZNAXIS",
    "ZNAXIS1", "ZNAXIS2", "ZTILE1", "ZTILE2", "ZCMPTYPE", "ZNAME1", "ZVAL1", "ZNAME2", "ZVAL2",
    "ZQUANTIZ", "ZDITHER0", "ZSIMPLE", "ZEXTEND", "ZPCOUNT", "ZGCOUNT", "TFIELDS", "TTYPE1",
    "TFORM1", "TTYPE2", "TFORM2", "TTYPE3", "TFORM3", "THEAP", "EXTNAME", "INHERIT", "END",
}


@dataclass(frozen=True)
class Section:
    """A FITS section ``[x1:x2,y1:y2]`` (1-based, inclusive, possibly reversed)."""

    x1: int
    x2: int
    y1: int
    y2: int

    @classmethod
    def parse(cls, text: str, *, path: str | Path | None = None, key: str | None = None) -> "Section":
        m = _SECTION.match(str(text))
        if not m:
            raise FitsFormatError(f"not a FITS section string: {text!r}", path, key=key)
        return cls(*(int(g) for g in m.groups()))

    @property
    def x_reversed(self) -> bool:
        return self.x1 > self.x2

    @property
    def y_reversed(self) -> bool:
        return self.y1 > self.y2

    @property
    def shape(self) -> tuple[int, int]:
        return abs(self.y2 - self.y1) + 1, abs(self.x2 - self.x1) + 1

    @property
    def slices(self) -> tuple[slice, slice]:
        """numpy (row, column) slices covering the section, in ascending order."""
        ylo, yhi = sorted((self.y1, self.y2))
        xlo, xhi = sorted((self.x1, self.x2))
        return slice(ylo - 1, yhi), slice(xlo - 1, xhi)

    def __str__(self) -> str:
        return f"[{self.x1}:{self.x2},{self.y1}:{self.y2}]"


def open_fits(path: str | Path, *, lazy: bool = True) -> fits.HDUList:
    """Open a FITS file, turning astropy's many failure modes into one clear error.

    A file that is not FITS, is empty, or is truncated (missing data of any HDU) raises
    :class:`FitsFormatError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise FitsFormatError("no such file", path)
    if not path.is_file():
        raise FitsFormatError("not a regular file", path)
    if path.stat().st_size == 0:
        raise FitsFormatError("empty file (0 bytes)", path)
    with path.open("rb") as fh:
        magic = fh.read(9)
    if magic != b"SIMPLE  =":
        raise FitsFormatError("not a FITS file (no SIMPLE card at the start)", path)
    # Truncation is found from the headers' announced sizes, not by turning astropy's warnings
    # into errors: warning filters are process-wide, and push, ingest and the node run in threads.
    check_complete(path)
    try:
        hdul = fits.open(path, memmap=False, lazy_load_hdus=lazy)
        if not lazy:
            hdul.readall()
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise FitsFormatError(f"unreadable FITS file ({exc})", path) from None
    return hdul


def _data_bytes(header: fits.Header) -> int:
    """Bytes of data an HDU header announces (before padding to 2880)."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    count = 1
    for i in range(1, naxis + 1):
        count *= int(header[f"NAXIS{i}"])
    gcount = int(header.get("GCOUNT", 1))
    pcount = int(header.get("PCOUNT", 0))
    return abs(int(header["BITPIX"])) // 8 * gcount * (pcount + count)


def check_complete(path: str | Path) -> int:
    """Verify every HDU of a FITS file is present with all its data; return the HDU count.

    Reads headers only (no pixels): each header's announced data size is added up and
    compared with the bytes on disk, so a file still being written, or cut short, fails.
    """
    path = Path(path)
    if not path.is_file():
        raise FitsFormatError("no such file" if not path.exists() else "not a regular file", path)
    size = path.stat().st_size
    if size == 0:
        raise FitsFormatError("empty file (0 bytes)", path)
    n = 0
    offset = 0
    with path.open("rb") as fh:
        if fh.read(9) != b"SIMPLE  =":
            raise FitsFormatError("not a FITS file (no SIMPLE card at the start)", path)
        while offset < size:
            fh.seek(offset)
            try:
                header = fits.Header.fromfile(fh)
            except (OSError, ValueError, EOFError) as exc:
                raise FitsFormatError(f"truncated or damaged header of HDU {n} ({exc})", path) from None
            header_end = fh.tell()
            data = _data_bytes(header)
            offset = header_end + -(-data // 2880) * 2880
            if offset > size:
                raise FitsFormatError(
                    f"truncated: HDU {n} needs {offset} bytes, the file has {size}", path
                )
            n += 1
    return n


def require(header: fits.Header, keys: list[str] | tuple[str, ...], path: str | Path | None, what: str = "") -> None:
    """Raise :class:`FitsFormatError` naming every missing keyword."""
    missing = [k for k in keys if k not in header]
    if missing:
        where = f" in {what}" if what else ""
        raise FitsFormatError(f"missing header keyword(s) {', '.join(missing)}{where}", path)


def merge_headers(primary: fits.Header, extension: fits.Header) -> fits.Header:
    """Primary keywords overlaid by the extension's (structure cards dropped), as one header."""
    merged = fits.Header()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)  # long keywords become HIERARCH
        for source in (primary, extension):
            for card in source.cards:
                if card.keyword in STRUCTURAL or card.keyword in ("", "COMMENT", "HISTORY"):
                    continue
                merged[card.keyword] = (card.value, card.comment)
    if "EXTNAME" in extension:
        merged["EXTNAME"] = extension["EXTNAME"]
    return merged
