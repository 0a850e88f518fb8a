"""Before anything is decompressed or allocated: is the declared image size a CCD of this instrument?

A member's header (``ZNAXISn`` of a tile-compressed FITS, ``NAXISn`` of a plain one, the SIZ
marker of a JPEG 2000 codestream) says how big the decompressed image will be, and the header
calibration reads (the manifest's, carried into the restored file) says where each amplifier's
data, overscan and CCD sections lie. Nothing of that is trusted before it is checked against:

* the instrument's raw CCD size (:data:`RAW_SHAPE`, with overscan; a member may not be larger),
* the manifest's ``shape`` for the member (the packer measured it from the pixels),
* the sections themselves: every DATASEC/BIASSEC inside the declared image, every data section
  the size of its CCD section, the trimmed CCD no larger than the raw one.

A 0.8 MB member claiming 100000 x 100000 pixels, or a frame smaller than the CCD its sections
describe, is refused here with an :class:`~dwfhpc.errors.IntegrityError` naming the member and
the numbers (permanent: another attempt reads the same bytes), instead of an out-of-memory kill
or a broadcasting error halfway through calibration. Only headers are read (a few kB).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from astropy.io import fits

from ..errors import DwfError, IntegrityError
from ..fitscards import parse_card, split_cards
from ..instruments import CCDGeometry, get_instrument
from .manifest import Manifest

#: one raw CCD with its prescan/overscan, (ny, nx): DECam 2 x (6 + 1024 + 50) columns by 4096 + 50 rows;
#: HSC 4 channels of (8 + 512 + 16 + ...) columns = 2144 by 4241 rows (obs_subaru's raw geometry)
RAW_SHAPE: dict[str, tuple[int, int]] = {"decam": (4146, 2160), "hsc": (4241, 2144)}

_BLOCK = 2880
_MAX_HEADER_BLOCKS = 2000  # 5.8 MB of cards: far beyond any real CCD header
_MAX_HDUS = 8


def raw_shape_limit(instrument: str) -> tuple[int, int]:
    """The largest raw CCD (ny, nx) of ``instrument``: its model's ``raw_shape`` if it has one, else :data:`RAW_SHAPE`."""
    inst = get_instrument(instrument)
    shape = getattr(inst, "raw_shape", None) or RAW_SHAPE.get(inst.name)
    if shape is None:
        raise DwfError(f"no raw CCD size known for instrument {instrument!r}")
    return int(shape[0]), int(shape[1])


def _fmt(shape: tuple[int, int] | list[int]) -> str:
    """``nx x ny`` (FITS order: NAXIS1 x NAXIS2) of a numpy (ny, nx) shape."""
    return f"{shape[1]} x {shape[0]}"


def check_shape(shape: tuple[int, int] | list[int], instrument: str, *, what: str, path=None) -> tuple[int, int]:
    """``shape`` (ny, nx) is a 2-D image no larger than the instrument's raw CCD; returns it as a tuple."""
    if len(shape) != 2 or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in shape):
        raise IntegrityError(f"{what}: declared image size {list(shape)} is not a 2-D image", path)
    limit = raw_shape_limit(instrument)
    if shape[0] > limit[0] or shape[1] > limit[1]:
        raise IntegrityError(f"{what}: declared image size {_fmt(shape)} exceeds a {instrument} raw CCD "
                             f"({_fmt(limit)})", path)
    return int(shape[0]), int(shape[1])


def check_geometry(geometry: CCDGeometry, shape: tuple[int, int], *, what: str, path=None) -> None:
    """Every amplifier's sections fit the raw image ``shape`` (ny, nx) and map onto a trimmed CCD no larger."""
    ny, nx = shape
    for amp in geometry.amps:
        for label, sec in (("data", amp.data), ("overscan", amp.bias)):
            if max(sec.x1, sec.x2) > nx or max(sec.y1, sec.y2) > ny or min(sec.x1, sec.x2, sec.y1, sec.y2) < 1:
                raise IntegrityError(f"{what}: amplifier {amp.name} {label} section {sec} lies outside the declared "
                                     f"{nx} x {ny} image", path)
        if amp.data.shape != amp.ccd.shape:
            raise IntegrityError(f"{what}: amplifier {amp.name} data section {amp.data} ({_fmt(amp.data.shape)}) "
                                 f"does not match its CCD section {amp.ccd} ({_fmt(amp.ccd.shape)})", path)
        if min(amp.ccd.x1, amp.ccd.x2, amp.ccd.y1, amp.ccd.y2) < 1:
            raise IntegrityError(f"{what}: amplifier {amp.name} CCD section {amp.ccd} starts before pixel 1", path)
    ty, tx = geometry.trimmed_shape
    if ty > ny or tx > nx:
        raise IntegrityError(f"{what}: CCD sections make a {tx} x {ty} CCD, larger than the declared "
                             f"{nx} x {ny} raw image", path)


def _geometry(header: fits.Header, instrument: str, shape: tuple[int, int], *, what: str, path=None) -> CCDGeometry:
    """The header's geometry with the pixel dimensions ``shape`` (a missing or unreadable section is an integrity error)."""
    h = header.copy()
    for key in ("ZNAXIS1", "ZNAXIS2", "NAXIS1", "NAXIS2", "RAWNAX1", "RAWNAX2"):
        h.remove(key, ignore_missing=True, remove_all=True)
    h["NAXIS1"], h["NAXIS2"] = shape[1], shape[0]
    try:
        return get_instrument(instrument).geometry(h, path)
    except (DwfError, KeyError, ValueError, TypeError) as exc:
        problem = exc.problem if isinstance(exc, DwfError) else str(exc)
        raise IntegrityError(f"{what}: CCD sections unreadable ({problem})", path) from None


def check_frame_header(header: fits.Header, instrument: str, *, what: str, path=None) -> tuple[int, int]:
    """A raw CCD header (library frame, restored CCD): its declared size and sections fit the instrument; returns (ny, nx)."""
    dims = []
    for axis in (1, 2):
        value = header.get(f"ZNAXIS{axis}", header.get(f"NAXIS{axis}", header.get(f"RAWNAX{axis}")))
        if not isinstance(value, int) or isinstance(value, bool):
            raise IntegrityError(f"{what}: no integer image size (NAXIS{axis}={value!r})", path)
        dims.append(value)
    shape = check_shape((dims[1], dims[0]), instrument, what=what, path=path)
    check_geometry(_geometry(header, instrument, shape, what=what, path=path), shape, what=what, path=path)
    return shape


def check_manifest_bounds(manifest: Manifest, ccd: int) -> tuple[int, int]:
    """The manifest alone (before scratch is sized): CCD ``ccd``'s shape fits the instrument, its sections fit the shape."""
    member = manifest.member(ccd)
    what = f"member {member.name}"
    shape = check_shape(list(member.shape), manifest.instrument, what=f"{what}: manifest field shape",
                        path=manifest.tar_name)
    try:
        header = member.fits_header()
    except (ValueError, KeyError, IndexError) as exc:
        raise IntegrityError(f"{what}: manifest header unreadable ({exc})", manifest.tar_name) from None
    check_geometry(_geometry(header, manifest.instrument, shape, what=what, path=manifest.tar_name), shape,
                   what=f"{what}: manifest header", path=manifest.tar_name)
    return shape


# --------------------------------------------------------------------------- member files, header only
def _int(value) -> int:
    """A structure keyword as an int; a real (``NAXIS = 2.0``) is refused like any non-integer."""
    if isinstance(value, float):
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


def _fits_headers(fh, path) -> list[dict]:
    """The keyword values of the first HDUs of a FITS file, reading headers only (data is skipped by seeking)."""
    size = os.fstat(fh.fileno()).st_size
    hdus: list[dict] = []
    pos = 0
    while pos < size and len(hdus) < _MAX_HDUS:
        fh.seek(pos)
        values: dict = {}
        for n in range(_MAX_HEADER_BLOCKS):
            block = fh.read(_BLOCK)
            if len(block) < _BLOCK:
                raise IntegrityError(f"FITS header {len(hdus)} is truncated", path)
            done = False
            for key, card in split_cards(block.decode("ascii", "replace")):
                if key == "END":
                    done = True
                    break
                if key and key not in values:
                    values[key] = parse_card(card)[1]  # None: a card without "= "
            if done:
                break
        else:
            raise IntegrityError(f"FITS header {len(hdus)} has no END in {_MAX_HEADER_BLOCKS} blocks", path)
        hdus.append(values)
        pos += (n + 1) * _BLOCK
        try:
            naxis = _int(values.get("NAXIS", 0))
            count = 0 if naxis == 0 else 1
            for i in range(1, naxis + 1):
                count *= _int(values.get(f"NAXIS{i}", 0))
            nbytes = abs(_int(values.get("BITPIX", 8))) // 8 * _int(values.get("GCOUNT", 1)) * (
                _int(values.get("PCOUNT", 0)) + count)
        except (TypeError, ValueError):
            raise IntegrityError(f"FITS header {len(hdus) - 1}: unreadable structure keywords", path) from None
        pos += -(-nbytes // _BLOCK) * _BLOCK
    return hdus


def _jp2_shape(fh, path) -> tuple[int, int]:
    """(rows, columns) from the SIZ marker of a JPEG 2000 codestream (in a JP2 box or bare)."""
    head = fh.read(1 << 16)
    at = head.find(b"\xff\x4f\xff\x51")
    if at < 0 or len(head) < at + 24:
        raise IntegrityError("JPEG 2000 member without a readable SIZ marker", path)
    xsiz, ysiz, xo, yo = struct.unpack(">IIII", head[at + 8:at + 24])
    return ysiz - yo, xsiz - xo


def declared_shape(member_path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """The (ny, nx) the member will decompress to, from its header alone; None for a format without one.

    FITS: the first HDU holding an image (``ZNAXISn`` when ``ZIMAGE = T``, else ``NAXISn``);
    JPEG 2000: the codestream's SIZ marker.
    """
    path = Path(member_path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(12)
            fh.seek(0)
            if magic.startswith(b"SIMPLE  ="):
                for values in _fits_headers(fh, path):
                    z = values.get("ZIMAGE") is True
                    prefix = "ZNAXIS" if z else "NAXIS"
                    naxis = values.get(prefix, 0)
                    if isinstance(naxis, float) or (naxis and naxis != 2):
                        raise IntegrityError(f"member declares a {naxis}-D image ({prefix}={naxis}), not a CCD", path)
                    if naxis:
                        dims = (values.get(f"{prefix}2"), values.get(f"{prefix}1"))
                        if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
                            raise IntegrityError(f"member declares no integer image size ({prefix}1/2)", path)
                        return dims
                raise IntegrityError("member FITS holds no image", path)
            if magic == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or magic.startswith(b"\xff\x4f\xff\x51"):
                return _jp2_shape(fh, path)
    except OSError as exc:
        raise IntegrityError(f"member unreadable ({exc.strerror or exc})", path) from None
    return None


def check_member_bounds(member_path: str | os.PathLike[str], manifest: Manifest, ccd: int) -> tuple[int, int]:
    """Before decompressing: the member's declared size is the manifest's shape, a CCD of the instrument, and
    the sections fit it. Raises :class:`IntegrityError` (permanent) naming the member and the sizes."""
    member = manifest.member(ccd)
    shape = check_manifest_bounds(manifest, ccd)
    declared = declared_shape(member_path)
    if declared is None:  # a format without a readable size: the manifest's shape, checked above, is all there is
        return shape
    what = f"member {member.name}"
    check_shape(declared, manifest.instrument, what=f"{what}: header", path=member_path)
    if tuple(declared) != tuple(shape):
        raise IntegrityError(f"{what}: header declares a {_fmt(declared)} image, the manifest's shape is "
                             f"{_fmt(shape)}: does not match the manifest", member_path)
    return shape


__all__ = ["RAW_SHAPE", "raw_shape_limit", "check_shape", "check_geometry", "check_frame_header",
           "check_manifest_bounds", "declared_shape", "check_member_bounds"]
