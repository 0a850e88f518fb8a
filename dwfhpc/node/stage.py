"""Stage one CCD into scratch: stream its member out of the part tarball, verify, decompress.

Only this CCD's bytes are read from the shared file system (``parts.extract_member`` seeks past
the other members). Timings: ``stage`` is the streamed copy (with the manifest's sha256 computed
on the fly, which rejects a corrupt member before anything else happens), ``verify`` re-reads the
local copy in scratch against the manifest (size + sha256: catches a bad local disk), and
``decompress`` writes the complete single-CCD raw FITS.

Before anything is calibrated, the member's own FITS header and the restored file's header are
cross-checked against the manifest (:mod:`.crosscheck`: instrument, EXPNUM/EXP-ID, CCDNUM/DET-ID,
DATE-OBS and the night it gives, OBSTYPE / DATA-TYP against the manifest's kind, FILTER for flats and
science); a disagreement is a permanent integrity failure. Before decompressing, the member's declared
image size (its header only) is checked against the manifest's shape and the instrument's CCD
(:mod:`.bounds`), so a decompression bomb or a frame smaller than its sections never reaches memory.

``in_memory=True`` (the embedded calibrator in this process) skips the raw FITS file: the member is
decompressed into an array and the header is the one that file would carry (:func:`restore_pixels`),
handed straight to the calibrator; the same checks run on them. Calibration frames and the image
backends (photpipe, hscpipe, the dwfhpc image) still get the file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..atomic import sha256_file
from ..codecs import get_codec
from ..codecs.base import RAW_DTYPE, clean_header, raw_fits_header
from ..errors import DwfError, IntegrityError
from ..layout import ccd_fits_name, under
from ..parts import Manifest, Member, extract_member, restore_ccd
from ..parts.bounds import check_manifest_bounds, check_member_bounds
from .crosscheck import check_header, check_member_file, check_restored


@dataclass
class StagedCCD:
    raw: Path | None  # decompressed single-CCD raw FITS in scratch (None: staged in memory)
    member: Member
    member_bytes: int
    timings: dict[str, float] = field(default_factory=dict)
    header: fits.Header | None = None  # in memory: the header the raw FITS would carry
    pixels: np.ndarray | None = None  # in memory: the uint16 raw ADU
    source: Path | None = None  # what messages name: the raw file, else the member it came from

    @property
    def in_memory(self) -> tuple[fits.Header, np.ndarray] | None:
        """(header, pixels) for :func:`dwfhpc.calibrate.calibrate_file`'s ``pixels``, or None (a file)."""
        return (self.header, self.pixels) if self.pixels is not None else None


def raw_bytes(member: Member) -> int:
    """Size of the decompressed CCD's pixels (header excluded)."""
    return int(np.prod(member.shape)) * np.dtype(member.dtype or "uint16").itemsize


def scratch_needed(member: Member, factor: float) -> int:
    """Bytes of scratch a task needs: the member plus ``factor`` x the decompressed CCD."""
    return member.bytes + int(factor * raw_bytes(member))


def restore_pixels(member_path: Path, manifest: Manifest, ccd: int) -> tuple[fits.Header, np.ndarray]:
    """What :func:`~dwfhpc.parts.restore_ccd` writes, in memory: the raw FITS's header (as astropy reads it
    back from that file) and its uint16 pixels. Same codec, same errors, and the header is checked
    against the manifest as :func:`~.crosscheck.check_restored` checks the file's."""
    member = manifest.member(ccd)
    codec = get_codec(member.codec, **(manifest.codec_params or {}))
    try:
        data = codec.decompress(member_path)
    except (OSError, ValueError, RuntimeError) as exc:
        raise DwfError(f"cannot decompress {member.codec} member ({exc})", member_path) from None
    header = clean_header(member.fits_header())
    codec.describe(header)
    data = np.ascontiguousarray(data, dtype=RAW_DTYPE)
    header = raw_fits_header(header, data.shape)
    check_header(header, manifest, ccd, what=f"CCD {ccd}", path=member_path)
    return header, data


def stage_ccd(tar: str | Path, manifest: Manifest, ccd: int, scratch: Path, *, in_memory: bool = False) -> StagedCCD:
    """Extract, verify and decompress CCD ``ccd`` of ``tar`` into ``scratch``; the member file is removed.

    ``in_memory``: decompress into :attr:`StagedCCD.pixels` + :attr:`StagedCCD.header`, no raw file.
    """
    tar = Path(tar)
    member = manifest.member(ccd)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    check_manifest_bounds(manifest, ccd)
    if not tar.is_file():
        raise IntegrityError("part tarball is missing", tar)
    staged = extract_member(tar, manifest, ccd, scratch / "member")
    timings["stage"] = time.perf_counter() - t

    t = time.perf_counter()
    size = staged.stat().st_size
    if size != member.bytes or sha256_file(staged) != member.sha256:
        raise IntegrityError(f"member {member.name!r}: the copy in scratch does not match the manifest "
                             f"({size} bytes)", staged)
    check_member_bounds(staged, manifest, ccd)  # header only: nothing decompressed yet
    check_member_file(staged, manifest, ccd)
    timings["verify"] = time.perf_counter() - t

    t = time.perf_counter()
    if in_memory:
        try:
            header, pixels = restore_pixels(staged, manifest, ccd)
        finally:
            staged.unlink()
        timings["decompress"] = time.perf_counter() - t
        return StagedCCD(raw=None, member=member, member_bytes=member.bytes, timings=timings, header=header,
                         pixels=pixels, source=staged)
    raw = restore_ccd(staged, member, manifest, under(scratch, ("expid", ccd_fits_name(manifest.expid, ccd))))
    staged.unlink()
    check_restored(raw, manifest, ccd)
    timings["decompress"] = time.perf_counter() - t
    return StagedCCD(raw=raw, member=member, member_bytes=member.bytes, timings=timings, source=raw)
