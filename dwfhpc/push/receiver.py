"""The receiving end of a streamed transport: ``dwfhpc receive`` takes parts from standard input.

With ``transport.stream: true`` each push stream keeps ONE ``ssh HOST dwfhpc receive --staging S
--inbox I`` running over its ControlMaster and feeds it part after part, so a part pays no rsync
handshake (~2.2 s at 300 ms RTT) and no remote move command. Protocol ``dwfhpc-receive/1``:

- the receiver first writes ``{"hello": "dwfhpc-receive/1"}`` (one JSON line);
- the sender writes frames: a JSON header line ``{"name": N, "bytes": B, "sha256": H}`` and then B
  raw bytes. N must be a part file name (``<expid>.p<k>of<K>.tar`` or ``.manifest.json``);
- a frame is written to ``STAGING/.N.<pid>.receiving``, hashed as it arrives, and renamed to
  ``STAGING/N`` only when its length and sha256 match the header; otherwise it is removed;
- a manifest frame publishes its part: the staged tarball must match the manifest's
  ``tar_sha256``; it is moved into the inbox first, the manifest last (the ingest never sees a
  manifest without its complete tarball: the same rule as the rsync transport);
- every frame gets one answer line: ``{"name": N, "ok": true}`` or ``{"name": N, "error": TEXT,
  "retryable": BOOL}``. A damaged or unwritable frame (e.g. a full disk) is reported and the
  stream goes on; the sender sends the part again. End of input ends the receiver (exit 0).

Nothing here runs a shell; names are checked before any path is built from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import BinaryIO

from ..errors import TransferError
from .transport import _file_sha256, check_part_file_name, tar_digests

PROTOCOL = "dwfhpc-receive/1"
MAX_HEADER_BYTES = 4096
MAX_FRAME_BYTES = 64 << 30  # far above any part; a header claiming more is refused
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # not ours to fix (a folder in its place, ...): the frame is refused anyway
        pass


class FrameError(Exception):
    """One frame could not be taken; ``retryable``: sending it again may work."""

    def __init__(self, text: str, retryable: bool = True):
        super().__init__(text)
        self.retryable = retryable


class ProtocolError(Exception):
    """The input is not this protocol (no frame boundary to resume from): the receiver stops."""


def parse_header(line: bytes) -> tuple[str, int, str]:
    """``(name, bytes, sha256)`` of a frame header line; :class:`ProtocolError` when it is not one."""
    if not line.endswith(b"\n"):
        raise ProtocolError(f"frame header longer than {MAX_HEADER_BYTES} bytes or cut short")
    try:
        header = json.loads(line)
        name, size, digest = header["name"], header["bytes"], header["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"not a frame header ({exc})") from None
    if not isinstance(name, str) or not isinstance(size, int) or isinstance(size, bool) \
            or not 0 <= size <= MAX_FRAME_BYTES or not isinstance(digest, str) or not _SHA256.match(digest):
        raise ProtocolError(f"frame header fields out of range: {line[:200]!r}")
    try:
        check_part_file_name(name)
    except TransferError as exc:
        raise ProtocolError(exc.problem) from None
    return name, size, digest


def receive_frame(inp: BinaryIO, staging: Path, name: str, size: int, digest: str) -> None:
    """Read exactly ``size`` bytes into ``staging/name`` (via a hidden temporary), checked by sha256.

    Always consumes the frame's bytes, so the stream stays in step even when writing fails.
    :class:`EOFError` when the input ends inside the frame.
    """
    tmp = staging / f".{name}.{os.getpid()}.receiving"  # never shared with a receiver still ending
    h = hashlib.sha256()
    left = size
    write_error: OSError | None = None
    out = None
    try:
        try:
            out = open(tmp, "wb")
        except OSError as exc:
            write_error = exc
        while left:
            block = inp.read(min(_CHUNK, left))
            if not block:
                raise EOFError(f"input ended {left} bytes before the end of {name}")
            left -= len(block)
            h.update(block)
            if out is not None and write_error is None:
                try:
                    out.write(block)
                except OSError as exc:
                    write_error = exc
        if out is not None and write_error is None:
            try:
                out.close()
            except OSError as exc:
                write_error = exc
    except BaseException:
        if out is not None:
            out.close()
        _discard(tmp)
        raise
    if write_error is not None:
        _discard(tmp)
        raise FrameError(f"cannot write {tmp}: {write_error.strerror or write_error}")
    if h.hexdigest() != digest:
        _discard(tmp)
        raise FrameError(f"sha256 of the received bytes {h.hexdigest()[:12]}... differs from the sender's "
                         f"{digest[:12]}...: not published")
    try:
        os.replace(tmp, staging / name)
    except OSError as exc:
        _discard(tmp)
        raise FrameError(f"cannot write {staging / name}: {exc.strerror or exc}") from None


def publish(staging: Path, inbox: Path, manifest_name: str, received: dict[str, str]) -> None:
    """Move a part staging -> inbox, tarball first, manifest last, once the tarball matches the manifest.

    ``received`` holds the sha256 of tarballs taken this session (hashed on arrival, not read again).
    """
    stem = manifest_name.removesuffix(".manifest.json")
    tar, manifest = staging / f"{stem}.tar", staging / manifest_name
    try:
        want = tar_digests([(tar, manifest)])[tar.name]
    except TransferError as exc:
        manifest.unlink(missing_ok=True)
        raise FrameError(f"manifest not usable: {exc.problem}", retryable=False) from None
    if not tar.exists():
        raise FrameError(f"{tar.name} is not in staging: the part must be sent again, tarball first")
    got = received.get(tar.name) or _file_sha256(tar)
    if got != want:
        tar.unlink(missing_ok=True)
        raise FrameError(f"{tar.name}: sha256 {got[:12]}... does not match the manifest's {want[:12]}...")
    os.replace(tar, inbox / tar.name)
    os.replace(manifest, inbox / manifest_name)
    received.pop(tar.name, None)


def _answer(out: BinaryIO, message: dict) -> None:
    out.write(json.dumps(message).encode() + b"\n")
    out.flush()


def serve(inp: BinaryIO, out: BinaryIO, staging: Path, inbox: Path) -> int:
    """Take frames from ``inp`` until it ends; answer each on ``out``. 0 at a clean end of input."""
    staging, inbox = Path(staging), Path(inbox)
    staging.mkdir(parents=True, exist_ok=True)
    inbox.mkdir(parents=True, exist_ok=True)
    _answer(out, {"hello": PROTOCOL})
    received: dict[str, str] = {}
    while True:
        line = inp.readline(MAX_HEADER_BYTES + 1)
        if not line:
            return 0
        try:
            name, size, digest = parse_header(line)
        except ProtocolError as exc:
            _answer(out, {"name": None, "error": f"protocol: {exc}", "retryable": False})
            return 2
        try:
            receive_frame(inp, staging, name, size, digest)
            if name.endswith(".tar"):
                received[name] = digest
            else:
                publish(staging, inbox, name, received)
        except FrameError as exc:
            _answer(out, {"name": name, "error": str(exc), "retryable": exc.retryable})
            continue
        except OSError as exc:  # publishing: the inbox gone, a full disk, ...
            _answer(out, {"name": name, "error": f"{exc.filename or name}: {exc.strerror or exc}", "retryable": True})
            continue
        except EOFError:
            return 3  # the sender went away inside a frame: nothing of it was published
        _answer(out, {"name": name, "ok": True})
