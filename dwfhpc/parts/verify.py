"""Check a part against its manifest and take members out of it safely.

A member is accepted only if it is a regular file listed in the manifest, with a plain name
(no directory, no ``..``, not absolute), the listed size and the listed sha256. Links, devices
and unlisted members are refused. Nothing is written under its final name until it is verified.

The tarball is untrusted input: :func:`verify_part` compares its size (without reading it) and then
its sha256 with the manifest before any tar header is parsed, so a tarball that is not the one the
manifest describes is never handed to :mod:`tarfile`. Even a tarball whose sha256 matches (a sender
can sign a crafted file) has its 512-byte headers walked first by :func:`check_headers`, which bounds
what :mod:`tarfile` will parse: extended (pax / GNU long-name) headers of at most
:data:`MAX_EXTENDED_HEADER` bytes each, no GNU sparse members or records, no global headers, and no
more headers than the manifest's members need. Any failure to parse is an :class:`IntegrityError`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from ..atomic import CHUNK
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


# ----------------------------------------------------------------------------- bounded header walk
BLOCK = 512
MAX_EXTENDED_HEADER = 1024  # bytes of one pax or GNU long-name header (the packer's pax records are ~30 bytes)
MAX_EXTENDED_CHAIN = 2  # extended headers in a row before a member's own header (pax + GNU long name)
_SLACK_BYTES = 1 << 20  # end-of-archive blocks and record padding a tar writer may add
_PAX = (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE)
_GNU_LONG = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_MAX_PAX_SIZE_DIGITS = 20


def _blocks(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def max_tar_bytes(manifest: Manifest) -> int:
    """The most bytes a tarball of ``manifest``'s members can take: data, headers, padding."""
    per_member = BLOCK + MAX_EXTENDED_CHAIN * (BLOCK + _blocks(MAX_EXTENDED_HEADER))
    return sum(_blocks(m.bytes) + per_member for m in manifest.members) + _SLACK_BYTES


def _pax_size(data: bytes, offset: int, tar: Path) -> int | None:
    """The ``size`` record of a pax header, checked record by record (linear); sparse records refused."""
    size, pos = None, 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 8)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise IntegrityError(f"pax header at offset {offset}: malformed record (no length field)", tar)
        length = int(digits)
        end = pos + length
        if length <= len(digits) + 1 or end > len(data) or data[end - 1:end] != b"\n":
            raise IntegrityError(f"pax header at offset {offset}: malformed record (bad length)", tar)
        key, eq, value = data[space + 1:end - 1].partition(b"=")
        if not eq or not key:
            raise IntegrityError(f"pax header at offset {offset}: malformed record (no keyword)", tar)
        if key.startswith(b"GNU.sparse"):
            raise IntegrityError(f"pax header at offset {offset}: GNU sparse records are refused", tar)
        if key == b"size":
            if not value.isdigit() or len(value) > _MAX_PAX_SIZE_DIGITS:
                raise IntegrityError(f"pax header at offset {offset}: size record {value[:40]!r} is not a size", tar)
            size = int(value)
        pos = end
    return size


def check_headers(fh: BinaryIO, size: int, n_members: int, tar: Path) -> None:
    """Walk the tarball's 512-byte headers as :mod:`tarfile` will, refusing what would make it slow.

    Each header is read once by seeking over member data, so this costs one small read per header.
    Refused: an extended header (pax or GNU long name) over :data:`MAX_EXTENDED_HEADER` bytes or
    malformed, more than :data:`MAX_EXTENDED_CHAIN` in a row, global pax headers, GNU sparse members
    and records, and more headers than ``n_members`` members need. The walk stops where
    :mod:`tarfile` stops (an empty or invalid header); what follows is never parsed.
    """
    offset, headers, chain, pax_size = 0, 0, 0, None
    max_headers = (1 + MAX_EXTENDED_CHAIN) * (n_members + 2)  # room for one extra member, named by the listing
    while offset + BLOCK <= size:
        fh.seek(offset)
        buf = fh.read(BLOCK)
        if len(buf) < BLOCK or buf.count(0) == BLOCK:
            return
        try:
            valid = tarfile.nti(buf[148:156]) in tarfile.calc_chksums(buf)
        except (tarfile.HeaderError, ValueError):
            valid = False
        if not valid:
            return  # tarfile ends the archive here too (or, at offset 0, says it is not a tar file)
        try:
            hsize = tarfile.nti(buf[124:136])
        except (tarfile.HeaderError, ValueError):
            raise IntegrityError(f"not a readable tar file (header at offset {offset}: unreadable size)", tar) from None
        headers += 1
        if headers > max_headers:
            raise IntegrityError(f"more than {max_headers} tar headers for {n_members} member(s)", tar)
        kind = buf[156:157]
        if kind == tarfile.GNUTYPE_SPARSE:
            raise IntegrityError(f"tar header at offset {offset}: GNU sparse members are refused", tar)
        if kind == tarfile.XGLTYPE:
            raise IntegrityError(f"tar header at offset {offset}: global pax headers are refused", tar)
        if kind in _PAX or kind in _GNU_LONG:
            chain += 1
            if chain > MAX_EXTENDED_CHAIN:
                raise IntegrityError(f"tar header at offset {offset}: more than {MAX_EXTENDED_CHAIN} "
                                     "extended headers in a row", tar)
            if not 0 < hsize <= MAX_EXTENDED_HEADER:
                raise IntegrityError(f"extended tar header at offset {offset} is {hsize} bytes "
                                     f"(at most {MAX_EXTENDED_HEADER} allowed)", tar)
            fh.seek(offset + BLOCK)
            data = fh.read(hsize)
            if len(data) < hsize:
                raise IntegrityError(f"extended tar header at offset {offset} is truncated", tar)
            if kind in _PAX:
                found = _pax_size(data, offset, tar)
                pax_size = found if found is not None else pax_size
            offset += BLOCK + _blocks(hsize)
            continue
        chain = 0
        if pax_size is not None:
            hsize, pax_size = pax_size, None
        if hsize < 0:
            raise IntegrityError(f"not a readable tar file (header at offset {offset}: negative size)", tar)
        offset += BLOCK
        if kind in tarfile.REGULAR_TYPES or kind not in tarfile.SUPPORTED_TYPES:
            offset += _blocks(hsize)


# ----------------------------------------------------------------------------- the check
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


def _listing(fh: BinaryIO, size: int, expected: dict[str, Member], tar: Path, digests: bool) -> set[str]:
    """The members of the open tarball ``fh``, checked; any parse failure is an :class:`IntegrityError`.

    An :class:`OSError` (the file vanished or could not be read) passes through: it may be transient.
    """
    check_headers(fh, size, len(expected), tar)
    fh.seek(0)
    try:
        with tarfile.open(fileobj=fh, mode="r:") as t:
            return _check_listing(t, expected, tar, (lambda info: _member_digest(t, info)) if digests else None)
    except (IntegrityError, OSError):
        raise
    except tarfile.TarError as exc:
        raise IntegrityError(f"not a readable tar file ({str(exc)[:200]})", tar) from None
    except Exception as exc:  # noqa: BLE001 - whatever tarfile raises on crafted input is this part's problem
        raise IntegrityError(f"not a readable tar file ({type(exc).__name__}: {str(exc)[:200]})", tar) from None


def _sha256_open(fh: BinaryIO) -> str:
    h = hashlib.sha256()
    fh.seek(0)
    while block := fh.read(CHUNK):
        h.update(block)
    return h.hexdigest()


def _open_regular(tar: Path) -> BinaryIO:
    """``tar`` opened for reading, refused unless a regular file (a FIFO or device is never read)."""
    try:
        fd = os.open(tar, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise IntegrityError("tarball is missing", tar) from None
    except IsADirectoryError:
        raise IntegrityError("tarball is not a regular file (a folder)", tar) from None
    fh = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        fh.close()
        raise IntegrityError("tarball is not a regular file (a FIFO, device or socket)", tar)
    return fh


def verify_part(tar: str | os.PathLike[str], manifest_path: str | os.PathLike[str] | None = None, *,
                members: bool = True) -> Manifest:
    """Tarball size + sha256 against the manifest, then its member list (safety, names, sizes), then each member's sha256.

    In that order, on one open file: a size that differs from the manifest's (or more than its members
    can take) is refused without reading a byte; a sha256 that differs is refused before any header is
    parsed; the headers are then walked with bounds (:func:`check_headers`) before :mod:`tarfile` lists
    them. ``members=False`` skips the members' digests (the tarball's digest already proves the bytes
    are the packer's; each member is checked again when a node extracts it).
    """
    tar = Path(tar)
    manifest_path = Path(manifest_path) if manifest_path else manifest_for_tar(tar)
    manifest = read_manifest(manifest_path)
    limit = max_tar_bytes(manifest)
    if manifest.tar_bytes > limit:
        raise IntegrityError(f"field tar_bytes: {manifest.tar_bytes} bytes is more than its members can take "
                             f"({limit})", manifest_path)
    with _open_regular(tar) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size != manifest.tar_bytes:
            raise IntegrityError(f"tarball has {size} bytes, the manifest says {manifest.tar_bytes}", tar)
        digest = _sha256_open(fh)
        if digest != manifest.tar_sha256:  # the whole file is wrong: never parse it
            raise IntegrityError(f"tarball sha256 {digest[:12]}... does not match the manifest's "
                                 f"{manifest.tar_sha256[:12]}...", tar)
        expected = {m.name: m for m in manifest.members}
        seen = _listing(fh, size, expected, tar, digests=members)
    missing = sorted(set(expected) - seen)
    if missing:
        raise IntegrityError(f"member(s) {', '.join(missing)} listed in the manifest are missing", tar)
    return manifest


def _bounded(fh: BinaryIO, tar: Path, n_members: int) -> BinaryIO:
    """``fh`` rewound after :func:`check_headers` passed on it."""
    check_headers(fh, os.fstat(fh.fileno()).st_size, n_members, tar)
    fh.seek(0)
    return fh


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
        with open(tar, "rb") as fh, tarfile.open(fileobj=_bounded(fh, tar, len(manifest.members)), mode="r:") as t:
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
    except (IntegrityError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - tarfile's errors on a crafted header
        raise IntegrityError(f"member {member.name!r}: unreadable tar ({type(exc).__name__}: {str(exc)[:200]})",
                             tar) from None
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
