"""The receiving end of a streamed transport: ``dwfhpc receive`` takes parts from standard input.

With ``transport.stream: true`` each push stream keeps ONE ``ssh HOST dwfhpc receive --staging S
--inbox I`` running over its ControlMaster and feeds it part after part, so a part pays no rsync
handshake (~2.2 s at 300 ms RTT) and no remote move command. Protocol ``dwfhpc-receive/1`` (its
names, frame header and publish rule are :mod:`dwfhpc.link.protocol`'s, shared with the sender):

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
- a manifest that is not a JSON object with a valid ``tar_sha256`` (a list, a string, JSON nested
  past the parser's depth, not UTF-8, ...) is refused as that frame's error; so is any other
  failure while handling one frame: it never ends the receiver. Only input that is not this
  protocol (a header that cannot be read: no frame boundary to resume from) ends it, with the
  reason as the last answer and on standard error (exit 2; 3 when the sender goes away).

Orphans: files of this protocol left in staging (a tarball whose manifest never came, the
temporary of a receiver killed mid-frame) are removed once untouched for ``orphan_seconds``
(default :data:`ORPHAN_SECONDS`), when the receiver starts and periodically while it runs, with
one line each on standard error. Removed rather than kept aside: the sender counts a part
delivered only when its manifest is published, so it still holds the part and sends it again
whole; a kept copy would only fill the staging disk, which the next frames need.

Nothing here runs a shell; names are checked before any path is built from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO, TextIO

from .protocol import (CHUNK, MAX_HEADER_BYTES, PART_FILE_BODY, PROTOCOL, ManifestUnusable, ProtocolError,
                       PublishError, manifest_tar_sha256, parse_header, publish_part)

#: staging files of this protocol untouched this long are orphans (far above transport.timeout_seconds,
#: after which a stalled stream's receiver is killed, and the seconds between a tarball and its manifest)
ORPHAN_SECONDS = 3600.0
#: what this protocol leaves in staging: part files and ``.<part file>.<pid>.receiving`` temporaries
_STAGED = re.compile(rf"^(?P<tmp>\.)?{PART_FILE_BODY}(?(tmp)\.[0-9]+\.receiving)\Z")


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
            block = inp.read(min(CHUNK, left))
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
    """Publish the part whose manifest has just arrived, by the publish rule (:func:`~dwfhpc.link.protocol.publish_part`).

    ``received`` holds the sha256 of tarballs taken this session (hashed on arrival, not read again).
    An unusable manifest (:func:`~dwfhpc.link.protocol.manifest_tar_sha256`) is removed from staging
    and refused, not retryably: the same bytes fail again.
    """
    stem = manifest_name.removesuffix(".manifest.json")
    tar_name = f"{stem}.tar"
    try:
        want = manifest_tar_sha256(staging / manifest_name)
    except ManifestUnusable as exc:
        _discard(staging / manifest_name)
        raise FrameError(str(exc), retryable=False) from None
    try:
        publish_part(staging, inbox, tar_name, manifest_name, want, got=received.get(tar_name))
    except PublishError as exc:
        raise FrameError(str(exc)) from None
    received.pop(tar_name, None)


class SenderGone(Exception):
    """An answer could not be written: the sender has gone away."""


def _answer(out: BinaryIO, message: dict) -> None:
    try:
        out.write(json.dumps(message).encode() + b"\n")
        out.flush()
    except (OSError, ValueError) as exc:  # a broken pipe, a closed file
        raise SenderGone(str(exc)) from None


def _say(log: TextIO, text: str) -> None:
    """One line on the receiver's log (standard error); a log that cannot be written is not fatal."""
    try:
        log.write(f"dwfhpc receive: {text}\n")
        log.flush()
    except (OSError, ValueError):
        pass


def sweep_orphans(staging: Path, max_age: float, log: TextIO, now: float | None = None) -> list[str]:
    """Remove this protocol's files in ``staging`` untouched for ``max_age`` seconds; their names.

    Only regular files named as part files or ``.<part file>.<pid>.receiving`` temporaries are
    considered (nothing else in the folder, no folder, no symlink); each removal is one log line.
    Several receivers may sweep the same folder: a file another one removed first is skipped.
    """
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(staging))
    except OSError as exc:
        _say(log, f"cannot list {staging} for orphans: {exc.strerror or exc}")
        return removed
    for entry in entries:
        m = _STAGED.fullmatch(entry.name)
        if not m:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        age = now - st.st_mtime
        if not stat.S_ISREG(st.st_mode) or age < max_age:
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            _say(log, f"cannot remove orphan {entry.path}: {exc.strerror or exc}")
            continue
        what = ("the temporary of a receiver that ended inside a frame" if m["tmp"] else
                "a tarball whose manifest never came" if m["kind"] == "tar" else "a manifest whose part was not published")
        _say(log, f"removed orphan {entry.path} ({st.st_size} bytes, untouched for {age:.0f} s): {what}; "
                  "the sender sends the part again")
        removed.append(entry.name)
    return removed


class _OrphanSweeper:
    """Sweeps staging for orphans (:func:`sweep_orphans`) every ``interval`` seconds in a daemon thread."""

    def __init__(self, staging: Path, max_age: float, log: TextIO):
        self.staging, self.max_age, self.log = staging, max_age, log
        self.interval = max(1.0, min(max_age / 2, 600.0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receive-orphans", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                sweep_orphans(self.staging, self.max_age, self.log)
            except Exception as exc:  # never let the sweep end the receiver
                _say(self.log, f"orphan sweep failed: {type(exc).__name__}: {exc}")


def serve(inp: BinaryIO, out: BinaryIO, staging: Path, inbox: Path, *, orphan_seconds: float = ORPHAN_SECONDS,
          log: TextIO | None = None) -> int:
    """Take frames from ``inp`` until it ends; answer each on ``out``; 0 at a clean end of input.

    1: staging or the inbox cannot be created; 2: the input is not this protocol (its reason is the
    last answer and a line on ``log``); 3: the sender went away (input ended inside a frame, or an
    answer could not be written). Orphans in staging are swept at start and every so often.
    """
    log = sys.stderr if log is None else log
    staging, inbox = Path(staging), Path(inbox)
    try:
        staging.mkdir(parents=True, exist_ok=True)
        inbox.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _say(log, f"cannot create {exc.filename}: {exc.strerror or exc}")
        return 1
    sweep_orphans(staging, orphan_seconds, log)
    sweeper = _OrphanSweeper(staging, orphan_seconds, log)
    sweeper.start()
    try:
        _answer(out, {"hello": PROTOCOL})
        return _serve_frames(inp, out, staging, inbox, log)
    except SenderGone as exc:
        _say(log, f"stopping: the sender went away ({exc})")
        try:  # what is still buffered for the closed pipe must not fail again at exit (Python's SIGPIPE advice)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass
        return 3
    finally:
        sweeper.stop()


def _serve_frames(inp: BinaryIO, out: BinaryIO, staging: Path, inbox: Path, log: TextIO) -> int:
    received: dict[str, str] = {}
    while True:
        try:
            line = inp.readline(MAX_HEADER_BYTES + 1)
        except (OSError, ValueError) as exc:
            _say(log, f"stopping: cannot read the input ({exc})")
            return 3
        if not line:
            return 0
        try:
            name, size, digest = parse_header(line)
        except ProtocolError as exc:
            _say(log, f"stopping: protocol: {exc}")
            _answer(out, {"name": None, "error": f"protocol: {exc}", "retryable": False})
            return 2
        try:
            receive_frame(inp, staging, name, size, digest)
        except FrameError as exc:  # the frame's bytes were read whole: the stream is in step
            _answer(out, {"name": name, "error": str(exc), "retryable": exc.retryable})
            continue
        except EOFError as exc:
            _say(log, f"stopping: {exc}")
            return 3  # the sender went away inside a frame: nothing of it was published
        except Exception as exc:  # reading stopped inside the frame: no boundary to resume from
            _say(log, f"stopping: protocol: {name}: cannot read the frame ({type(exc).__name__}: {exc})")
            _answer(out, {"name": name, "error": f"protocol: cannot read the frame ({type(exc).__name__}: {exc})",
                          "retryable": True})
            return 2
        try:
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
        except Exception as exc:  # anything else: this frame's error, never the receiver's end
            _say(log, f"{name}: refused: {type(exc).__name__}: {exc}")
            _answer(out, {"name": name, "error": f"receiver: {type(exc).__name__}: {str(exc)[:200]}",
                          "retryable": isinstance(exc, MemoryError)})
            continue
        _answer(out, {"name": name, "ok": True})
