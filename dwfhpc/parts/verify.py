"""Check a part against its manifest and take members out of it safely.

A member is accepted only if it is a regular file listed in the manifest, with a plain name
(no directory, no ``..``, not absolute), the listed size and the listed sha256. Links, devices
and unlisted members are refused. Nothing is written under its final name until it is verified.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..atomic import CHUNK, sha256_file
from ..codecs import decompress_member
from ..errors import IntegrityError
from ..layout import ccd_fits_name, manifest_for_tar, under
from .manifest import Manifest, Member, read_manifest


def _check_name(name: str, tar: Path) -> None:
    if not name or name.startswith("/") or "/" in name or "\\" in name or name in (".", "..") or ".." in name.split("/"):
        raise IntegrityError(f"member {name!r}: unsafe path (absolute, '..' or a folder)", tar)


def _check_member(info: tarfile.TarInfo, expected: dict[str, Member], tar: Path) -> Member:
    _check_name(info.name, tar)
    if info.issym() or info.islnk():
        raise IntegrityError(f"member {info.name!r}: links are refused", tar)
    if not info.isreg():
        raise IntegrityError(f"member {info.name!r}: not a regular file (device, folder or fifo)", tar)
    member = expected.get(info.name)
    if member is None:
        raise IntegrityError(f"member {info.name!r}: not listed in the manifest", tar)
    if info.size != member.bytes:
        raise IntegrityError(f"member {info.name!r}: {info.size} bytes, the manifest says {member.bytes}", tar)
    return member


class _HashingReader:
    """A file read once, front to back, hashing every byte on the way (tar stream mode reads this way)."""

    def __init__(self, fh):
        self.fh, self.h = fh, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.h.update(data)
        return data

    def hexdigest_of_all(self) -> str:
        while self.read(CHUNK):
            pass
        return self.h.hexdigest()


def _member_digest(t: tarfile.TarFile, info: tarfile.TarInfo) -> str:
    h = hashlib.sha256()
    src = t.extractfile(info)
    while block := src.read(CHUNK):
        h.update(block)
    return h.hexdigest()


def _check_listing(infos, expected: dict[str, Member], tar: Path, member_digest=None) -> set[str]:
    """Every header safe, listed, of the listed size and seen once; ``member_digest(info)`` checked if given."""
    seen: set[str] = set()
    for info in infos:
        member = _check_member(info, expected, tar)
        if info.name in seen:
            raise IntegrityError(f"member {info.name!r}: appears twice", tar)
        seen.add(info.name)
        if member_digest is not None and member_digest(info) != member.sha256:
            raise IntegrityError(f"member {info.name!r}: sha256 does not match the manifest", tar)
    return seen


def _listing(tar: Path, expected: dict[str, Member], open_tar,
             digests: bool) -> tuple[set[str], IntegrityError | None]:
    """The members seen in ``open_tar()``, or the first problem found (an unreadable tar or a bad member)."""
    try:
        with open_tar() as t:
            return _check_listing(t, expected, tar, (lambda info: _member_digest(t, info)) if digests else None), None
    except tarfile.TarError as exc:
        return set(), IntegrityError(f"not a readable tar file ({exc})", tar)
    except IntegrityError as exc:
        return set(), exc


def _scan_stream(tar: Path, expected: dict[str, Member]) -> tuple[str, set[str], IntegrityError | None]:
    """One pass front to back: the tarball's digest while every member's digest is checked."""
    with open(tar, "rb") as fh:
        reader = _HashingReader(fh)
        seen, problem = _listing(tar, expected, lambda: tarfile.open(fileobj=reader, mode="r|"), digests=True)
        return reader.hexdigest_of_all(), seen, problem


def _scan_headers(tar: Path, expected: dict[str, Member]) -> tuple[str, set[str], IntegrityError | None]:
    """The headers read by seeking over the data, then the tarball's digest in large blocks.

    The tar stream reader hands the file over in 10 KiB records through Python; large blocks go
    straight to hashlib (which releases the GIL for them), so this costs what the sha256 alone costs.
    """
    seen, problem = _listing(tar, expected, lambda: tarfile.open(tar, "r:"), digests=False)
    return sha256_file(tar), seen, problem


def verify_part(tar: str | os.PathLike[str], manifest_path: str | os.PathLike[str] | None = None, *,
                members: bool = True) -> Manifest:
    """Tarball size + sha256 against the manifest, its member list (safety, names, sizes) and each member's sha256.

    With ``members=True``, one pass over the file: the tarball's digest is computed while its members
    are read. ``members=False`` skips the members' digests (the tarball's digest already proves the
    bytes are the packer's; each member is checked again when a node extracts it): the headers are
    read by seeking and the file is hashed in large blocks: about half the full check's time, the cost of the sha256 alone.
    """
    tar = Path(tar)
    manifest_path = Path(manifest_path) if manifest_path else manifest_for_tar(tar)
    manifest = read_manifest(manifest_path)
    if not tar.is_file():
        raise IntegrityError("tarball is missing", tar)
    size = tar.stat().st_size
    if size != manifest.tar_bytes:
        raise IntegrityError(f"tarball has {size} bytes, the manifest says {manifest.tar_bytes}", tar)
    expected = {m.name: m for m in manifest.members}
    if members:
        digest, seen, problem = _scan_stream(tar, expected)
    else:
        digest, seen, problem = _scan_headers(tar, expected)
    if digest != manifest.tar_sha256:  # the whole file is wrong: say that first
        raise IntegrityError(f"tarball sha256 {digest[:12]}... does not match the manifest's {manifest.tar_sha256[:12]}...", tar)
    if problem is not None:
        raise problem
    missing = sorted(set(expected) - seen)
    if missing:
        raise IntegrityError(f"member(s) {', '.join(missing)} listed in the manifest are missing", tar)
    return manifest


def extract_member(tar: str | os.PathLike[str], manifest: Manifest | str | os.PathLike[str], ccd: int,
                   dest_dir: str | os.PathLike[str]) -> Path:
    """Stream one CCD's member out of the tarball into ``dest_dir`` and verify its sha256.

    Only that member's bytes are read (the tar headers before it are skipped by seeking).
    Returns the path of the (still compressed) member.
    """
    tar = Path(tar)
    manifest = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    member = manifest.member(ccd)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = under(dest_dir, ("members.name", member.name))
    tmp = under(dest_dir, ("members.name", f".{member.name}.part"))
    try:
        with tarfile.open(tar, "r:") as t:
            try:
                info = t.getmember(member.name)
            except KeyError:
                raise IntegrityError(f"member {member.name!r} (CCD {ccd}) is not in the tarball", tar) from None
            _check_member(info, {member.name: member}, tar)
            src = t.extractfile(info)
            if src is None:
                raise IntegrityError(f"member {member.name!r}: no data", tar)
            h = hashlib.sha256()
            with src, open(tmp, "wb") as out:
                while block := src.read(CHUNK):
                    h.update(block)
                    out.write(block)
        if h.hexdigest() != member.sha256:
            raise IntegrityError(f"member {member.name!r}: sha256 does not match the manifest", tar)
        os.replace(tmp, final)
        return final
    except tarfile.TarError as exc:
        raise IntegrityError(f"member {member.name!r}: unreadable tar ({exc})", tar) from None
    finally:
        tmp.unlink(missing_ok=True)


def restore_ccd(member_path: Path, member: Member, manifest: Manifest, out_fits: Path) -> Path:
    """Decompress a verified member into a complete single-CCD raw FITS."""
    return decompress_member(member_path, out_fits, codec=member.codec, header=member.fits_header(),
                             params=manifest.codec_params)


def unpack_part(tar: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                manifest_path: str | os.PathLike[str] | None = None) -> list[Path]:
    """Verify a part and decompress every CCD into ``out_dir`` as ``<expid>_<ccd>.fits``.

    Work happens in a temporary folder beside ``out_dir``; files move into ``out_dir`` only when
    every member verified and decompressed. On any problem ``out_dir`` gets nothing.
    """
    tar = Path(tar)
    manifest = verify_part(tar, manifest_path)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{manifest.expid}.unpack-", dir=out_dir.parent))
    try:
        done = []
        for m in manifest.members:
            member_path = extract_member(tar, manifest, m.ccd, work / "members")
            done.append(restore_ccd(member_path, m, manifest, under(work, ("expid", ccd_fits_name(manifest.expid, m.ccd)))))
            member_path.unlink()
        out_dir.mkdir(parents=True, exist_ok=True)
        final = []
        for f in done:
            target = out_dir / f.name
            os.replace(f, target)
            final.append(target)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)
