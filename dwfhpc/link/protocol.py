"""What both ends of the link share: part-file names, the manifest's ``tar_sha256``, the publish rule, frames.

Imported by the telescope side (:mod:`.rsync`, :mod:`.ssh`, :mod:`.stream`) and by the cluster side
(:mod:`.receiver`, which ``dwfhpc receive`` starts on every streamed connection), so it imports only
the standard library, :mod:`dwfhpc.errors`, :mod:`dwfhpc.layout` and :mod:`dwfhpc.atomic`: never
:mod:`dwfhpc.parts` (astropy) nor the config (pydantic), which would add a second and more to every
receiver's start-up.

* **Names**: only ``<expid>.p<k>of<K>.tar`` and ``<expid>.p<k>of<K>.manifest.json``
  (:data:`PART_FILE_RE`, built from :data:`dwfhpc.layout.PART_RE`; ``\\Z``, so no trailing newline)
  travel, and every name is checked (:func:`check_part_file_name`) before a command or a path is
  built from it.
* **The manifest's tar_sha256** (:func:`manifest_tar_sha256`): the one field the link reads. Read by
  hand, on purpose, rather than with :func:`dwfhpc.parts.read_manifest`: the link only ties a
  tarball to its manifest; the full schema check is the ingest's (it quarantines a bad manifest
  with the field named), and the receiver must neither import astropy nor refuse, with a
  schema error it cannot report, a part the ingest should quarantine. The reader is bounded
  (:data:`MAX_MANIFEST_BYTES`) because on the receiver the file is untrusted.
* **The publish rule** (:func:`publish_part`): staging -> inbox, the tarball first and only when its
  sha256 is the manifest's, the manifest last, so the ingest never sees a manifest without its
  complete tarball. The ssh mover of :class:`~dwfhpc.link.rsync.SshTransport` is the same rule as a
  remote shell script.
* **Frames** of ``dwfhpc-receive/1`` (:data:`PROTOCOL`; the conversation is described in
  :mod:`.receiver`): a JSON header line (:func:`frame_header`, :func:`parse_header`) then the bytes.
* **Commands** toward the receiver (:func:`run_command`, :func:`classify`) and the sender-side
  contract :class:`Transport`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from ..atomic import sha256_file
from ..errors import TransferError
from ..layout import PART_RE

# ----------------------------------------------------------------------------- names
#: a part file name, whole: the part stem of :data:`dwfhpc.layout.PART_RE`, then ``.tar`` or ``.manifest.json``
PART_FILE_BODY = (r"(?P<stem>" + PART_RE.pattern.removeprefix("^").removesuffix(r"\Z") + r")"
                  r"\.(?P<kind>tar|manifest\.json)")
PART_FILE_RE = re.compile(rf"^{PART_FILE_BODY}\Z")  # \Z, not $: `$` also matches before a trailing newline
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")

PartFiles = tuple[Path, Path]  # (tarball, manifest)


def check_part_file_name(name: str) -> str:
    """Accept only ``<expid>.p<k>of<K>.tar`` / ``.manifest.json`` names; :class:`TransferError` otherwise."""
    if not isinstance(name, str) or not PART_FILE_RE.match(name):
        raise TransferError(f"refusing a file whose name is not a part name: {name!r}", name)
    return name


def batch_names(parts: list[PartFiles]) -> list[str]:
    """The batch's file names in publish order (each part's tarball, then its manifest); all checked."""
    if not parts:
        raise TransferError("nothing to deliver: empty batch")
    return [check_part_file_name(f.name) for tar, man in parts for f in (tar, man)]


def describe_batch(parts: list[PartFiles]) -> str:
    """A batch in messages: ``X.p1of4`` or ``X.p1of4 (+2 more)``."""
    first = parts[0][0].name.removesuffix(".tar")
    return first if len(parts) == 1 else f"{first} (+{len(parts) - 1} more)"


# ----------------------------------------------------------------------------- the manifest's tar_sha256
MAX_MANIFEST_BYTES = 256 << 20  # far above any manifest (headers of ~100 CCDs); never read into memory past it


class ManifestUnusable(ValueError):
    """A manifest the link cannot take a ``tar_sha256`` from (the same bytes fail again: not retryable)."""


def manifest_tar_sha256(manifest: Path) -> str:
    """The ``tar_sha256`` a manifest records (the one field the link reads; see the module text).

    :class:`ManifestUnusable` when the file is larger than :data:`MAX_MANIFEST_BYTES`, not UTF-8
    JSON, nested past the parser's depth, not a JSON object, or has no valid ``tar_sha256``;
    :class:`OSError` when it cannot be read.
    """
    if Path(manifest).stat().st_size > MAX_MANIFEST_BYTES:
        raise ManifestUnusable(f"manifest not usable: larger than {MAX_MANIFEST_BYTES >> 20} MiB")
    try:
        data = json.loads(Path(manifest).read_bytes())
    except RecursionError:
        raise ManifestUnusable("manifest not usable: JSON nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise ManifestUnusable(f"manifest not usable: not JSON ({str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise ManifestUnusable(f"manifest not usable: a JSON {type(data).__name__}, not an object")
    digest = data.get("tar_sha256")
    if not isinstance(digest, str) or not SHA256_RE.fullmatch(digest):
        raise ManifestUnusable("manifest not usable: no valid tar_sha256 (64 lowercase hex digits)")
    return digest


def tar_digests(parts: list[PartFiles]) -> dict[str, str]:
    """Each tarball's name -> the sha256 its manifest (beside it) records: checked before publishing."""
    out = {}
    for tar, manifest in parts:
        try:
            digest = manifest_tar_sha256(manifest)
        except OSError as exc:
            raise TransferError(f"cannot read the manifest ({exc.strerror or exc})", manifest) from None
        except ManifestUnusable as exc:
            raise TransferError(str(exc), manifest) from None
        out[check_part_file_name(Path(tar).name)] = digest
    return out


# ----------------------------------------------------------------------------- the publish rule
class PublishError(Exception):
    """A part was not published; the remedy is always to send the part again, tarball first."""

    def __init__(self, text: str, path: Path):
        super().__init__(f"{path.name} {text}")
        self.text, self.path = text, path


def publish_part(staging: Path, inbox: Path, tar_name: str, manifest_name: str, want: str, *,
                 got: str | None = None, repeated: bool = False) -> None:
    """Move one part staging -> inbox: the tarball first, only when its sha256 is ``want``; the manifest last.

    ``got``: the tarball's sha256 when already known (hashed on arrival), else it is read. A
    tarball that does not match is removed from staging. ``repeated``: a file gone from staging but
    already in the inbox counts as published (the rsync transport's move may run twice); without it
    (the receiver, which has just taken the part) the tarball must be in staging.
    Raises :class:`PublishError`; :class:`OSError` from the moves themselves.
    """
    tar = staging / tar_name
    if tar.exists():
        digest = got or sha256_file(tar)
        if digest != want:
            tar.unlink(missing_ok=True)
            raise PublishError(f"damaged in staging: sha256 {digest[:12]}... does not match the manifest's "
                               f"{want[:12]}...; not published", tar)
        os.replace(tar, inbox / tar_name)
    elif not (repeated and (inbox / tar_name).exists()):
        raise PublishError("is not in staging (vanished before it reached the inbox): the part must be sent "
                           "again, tarball first", tar)
    manifest = staging / manifest_name
    if manifest.exists():
        os.replace(manifest, inbox / manifest_name)
    elif not (repeated and (inbox / manifest_name).exists()):
        raise PublishError("is not in staging (vanished before it reached the inbox): the part must be sent again",
                           manifest)


# ----------------------------------------------------------------------------- frames
PROTOCOL = "dwfhpc-receive/1"
MAX_HEADER_BYTES = 4096
MAX_FRAME_BYTES = 64 << 30  # far above any part; a header claiming more is refused
CHUNK = 1 << 20


class ProtocolError(Exception):
    """The input is not this protocol (no frame boundary to resume from): the receiver stops."""


def frame_header(name: str, size: int, digest: str) -> bytes:
    """The header line of a frame: ``{"name": N, "bytes": B, "sha256": H}`` and a newline."""
    return json.dumps({"name": name, "bytes": size, "sha256": digest}).encode() + b"\n"


def parse_header(line: bytes) -> tuple[str, int, str]:
    """``(name, bytes, sha256)`` of a frame header line; :class:`ProtocolError` when it is not one."""
    if not line.endswith(b"\n"):
        raise ProtocolError(f"frame header longer than {MAX_HEADER_BYTES} bytes or cut short")
    try:
        header = json.loads(line)
        name, size, digest = header["name"], header["bytes"], header["sha256"]
    except (ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:  # not UTF-8, not an object, ...
        raise ProtocolError(f"not a frame header ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(name, str) or not isinstance(size, int) or isinstance(size, bool) \
            or not 0 <= size <= MAX_FRAME_BYTES or not isinstance(digest, str) or not SHA256_RE.fullmatch(digest):
        raise ProtocolError(f"frame header fields out of range: {line[:200]!r}")
    try:
        check_part_file_name(name)
    except TransferError as exc:
        raise ProtocolError(exc.problem) from None
    return name, size, digest


# ----------------------------------------------------------------------------- commands toward the receiver
#: rsync exit codes worth retrying: socket I/O, protocol stream, partial transfer, timeouts, ssh.
RETRYABLE_RSYNC = {10, 12, 23, 30, 35, 255}
_RETRYABLE_TEXT = ("connection refused", "connection reset", "connection timed out", "timed out",
                   "broken pipe", "connection closed", "no route to host", "network is unreachable",
                   "connection unexpectedly closed", "control socket", "mux_client")
#: ssh's words for a refusal that no retry can change (a wrong or unknown host key, a refused login)
_PERMANENT_TEXT = ("host key verification failed", "remote host identification has changed",
                   "permission denied (publickey")


def classify(returncode: int, stderr: str) -> bool:
    """True when a failed rsync/ssh call may succeed if tried again (never for a refused host key)."""
    text = stderr.lower()
    if any(s in text for s in _PERMANENT_TEXT):
        return False
    return returncode in RETRYABLE_RSYNC or any(s in text for s in _RETRYABLE_TEXT)


def run_command(argv: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    """Run an argument list (never a shell); :class:`TransferError` (retryable per :func:`classify`) on failure."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise TransferError(f"{what}: no answer within {timeout:g} s", retryable=True) from None
    except FileNotFoundError:
        raise TransferError(f"{what}: {argv[0]} is not installed") from None
    if proc.returncode != 0:
        err = " ".join(proc.stderr.strip().splitlines()[-3:]) or "(no message)"
        raise TransferError(f"{what} failed (exit {proc.returncode}): {err}", retryable=classify(proc.returncode, proc.stderr))
    return proc


# ----------------------------------------------------------------------------- the sender-side contract
class Transport:
    """Base: ``prepare()``, ``send(parts)`` + ``move(parts)`` (= ``deliver_many``), ``listing()``, ``close()``."""

    stream: int = 0

    def prepare(self) -> None:
        """Get the receiver ready before the first delivery (nothing to do by default)."""

    def send(self, parts: list[PartFiles]) -> None:  # pragma: no cover - interface
        """Copy the batch's files into the receiver's staging folder (one rsync call)."""
        raise TypeError("use LocalTransport, SshTransport or StreamTransport")

    def move(self, parts: list[PartFiles]) -> None:  # pragma: no cover - interface
        """Move the batch staging -> inbox (one command), each tarball before its manifest.

        A file already in the inbox and gone from staging counts as moved (a repeated move); one in
        neither raises a retryable :class:`TransferError` (send the batch again).
        """
        raise TypeError("use LocalTransport, SshTransport or StreamTransport")

    def deliver_many(self, parts: list[PartFiles]) -> None:
        """``send`` then ``move``: the batch is in the inbox when this returns."""
        self.send(parts)
        self.move(parts)

    def deliver(self, tar: Path, manifest: Path) -> None:
        """Deliver one part (tarball, then manifest)."""
        self.deliver_many([(tar, manifest)])

    def listing(self, folder: str | None = None) -> dict[str, int]:  # pragma: no cover - interface
        raise TypeError("use LocalTransport, SshTransport or StreamTransport")

    def close(self) -> None:
        """Release connections (nothing for local)."""
