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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import sha256_file
from ..errors import IntegrityError
from ..layout import ccd_fits_name, under
from ..parts import Manifest, Member, extract_member, restore_ccd
from .bounds import check_manifest_bounds, check_member_bounds
from .crosscheck import check_member_file, check_restored


@dataclass
class StagedCCD:
    raw: Path  # decompressed single-CCD raw FITS in scratch
    member: Member
    member_bytes: int
    timings: dict[str, float] = field(default_factory=dict)


def raw_bytes(member: Member) -> int:
    """Size of the decompressed CCD's pixels (header excluded)."""
    return int(np.prod(member.shape)) * np.dtype(member.dtype or "uint16").itemsize


def scratch_needed(member: Member, factor: float) -> int:
    """Bytes of scratch a task needs: the member plus ``factor`` x the decompressed CCD."""
    return member.bytes + int(factor * raw_bytes(member))


def stage_ccd(tar: str | Path, manifest: Manifest, ccd: int, scratch: Path) -> StagedCCD:
    """Extract, verify and decompress CCD ``ccd`` of ``tar`` into ``scratch``; the member file is removed."""
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
    raw = restore_ccd(staged, member, manifest, under(scratch, ("expid", ccd_fits_name(manifest.expid, ccd))))
    staged.unlink()
    check_restored(raw, manifest, ccd)
    timings["decompress"] = time.perf_counter() - t
    return StagedCCD(raw=raw, member=member, member_bytes=member.bytes, timings=timings)
