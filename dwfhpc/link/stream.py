"""A push stream that keeps one ``dwfhpc receive`` running on the receiver and feeds it parts.

:class:`StreamTransport` (``transport.kind: ssh`` with ``transport.stream: true``) opens ``ssh HOST
dwfhpc receive ...`` once, through the stream's ControlMaster, and writes every part of every batch
into it as frames (:mod:`dwfhpc.link.protocol`; the conversation in :mod:`dwfhpc.link.receiver`): no rsync handshake and no remote
move per part. The receiver publishes a part (tarball, then manifest) when its manifest frame has
arrived and matched, so :meth:`StreamTransport.send` returns with the batch already in the inbox
and :meth:`StreamTransport.move` has nothing left to do.

A stalled link (no byte accepted and no answer for ``transport.timeout_seconds``) or a broken
channel ends the process; the batch fails retryably and is sent again whole on a fresh process.
Staging and inbox creation, the ControlMaster and listings (end-of-night, through rsync) are
:class:`~dwfhpc.link.ssh.SshLink`'s, as for :class:`~dwfhpc.link.rsync.SshTransport`.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ..atomic import sha256_file
from ..errors import TransferError
from .protocol import CHUNK, PROTOCOL, PartFiles, batch_names, classify, describe_batch, frame_header, tar_digests
from .ssh import SshLink

if TYPE_CHECKING:
    from ..config import SiteSettings, TransportSettings

#: added to the stall limit while a receiver starts (ssh connection, the receiver's Python start-up)
STARTUP_GRACE_SECONDS = 30.0
#: the remote shell's "command not found" / "not executable": no retry installs dwfhpc there
_NOT_INSTALLED = (126, 127)


class StreamTransport(SshLink):
    """rsync-free delivery over one long-lived ``dwfhpc receive`` per stream (see the module text)."""

    def __init__(self, settings: TransportSettings, site: SiteSettings | None, stream: int, cm_dir: Path):
        super().__init__(settings, site, stream, cm_dir)
        words = shlex.split(settings.receiver_command)
        self.remote = " ".join(shlex.quote(w) for w in
                               [*words, "receive", "--staging", self.staging, "--inbox", self.inbox])
        self._proc: subprocess.Popen | None = None
        self._stderr: IO[bytes] | None = None
        self._lock = threading.Lock()  # one batch at a time on the process
        self._busy_since: float | None = None  # last progress while a batch is in progress
        self._stalled = False
        self._closed = threading.Event()
        self._watchdog: threading.Thread | None = None

    # ------------------------------------------------------------------ the process
    def _ensure(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._drop()
        self._stderr = tempfile.TemporaryFile()
        self._stalled = False
        try:
            self._proc = subprocess.Popen(self.ssh + [self.target, self.remote], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr)
        except FileNotFoundError:
            raise TransferError("ssh is not installed") from None
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name=f"stream-watchdog-{self.stream}", daemon=True)
            self._watchdog.start()
        hello = self._read_answer(self._proc, grace=STARTUP_GRACE_SECONDS)
        if hello.get("hello") != PROTOCOL:
            raise self._broken(f"the receiver answered {hello!r}, not {PROTOCOL}")
        return self._proc

    def _watch(self) -> None:
        """Kill the process when a batch makes no progress for ``timeout_seconds`` (a cut link)."""
        while not self._closed.wait(1.0):
            since, proc = self._busy_since, self._proc
            if since is not None and proc is not None and time.monotonic() - since > self.settings.timeout_seconds:
                self._stalled = True
                proc.kill()

    def _progress(self) -> None:
        self._busy_since = time.monotonic()

    def _drop(self) -> tuple[int | None, str]:
        """End the process (if any); its exit code and the tail of what it wrote on stderr."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None, ""
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        text = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace")
            self._stderr.close()
            self._stderr = None
        return rc, text

    def _broken(self, what: str) -> TransferError:
        """The process is no use any more: end it and say why (retryable unless no retry can help)."""
        stalled = self._stalled
        rc, stderr = self._drop()
        tail = " ".join(stderr.strip().splitlines()[-3:])
        if rc in _NOT_INSTALLED:
            return TransferError(f"the receiver cannot run {self.settings.receiver_command!r} (exit {rc}: {tail}); "
                                 "install dwfhpc there or set transport.receiver_command")
        if stalled:
            what = f"no progress for {self.settings.timeout_seconds} s ({what})"
        message = f"stream to {self.settings.host} broke: {what}" + (f"; ssh said: {tail}" if tail else "") + \
            (f" (exit {rc})" if rc is not None else "")
        return TransferError(message, retryable=stalled or rc is None or rc < 0 or classify(rc, stderr) or not tail)

    def _read_answer(self, proc: subprocess.Popen, grace: float = 0.0) -> dict:
        self._busy_since = time.monotonic() + grace
        line = proc.stdout.readline(4096)
        if not line:
            raise self._broken("the receiver closed the stream")
        try:
            answer = json.loads(line)
        except ValueError:
            raise self._broken(f"not an answer: {line[:200]!r}") from None
        if not isinstance(answer, dict):
            raise self._broken(f"not an answer: {line[:200]!r}")
        return answer

    # ------------------------------------------------------------------ the transport
    def prepare(self) -> None:
        """Create staging and inbox (opening the master), then start the receiver before the first part."""
        super().prepare()
        with self._lock:
            self._busy_since = time.monotonic()
            try:
                self._ensure()
            finally:
                self._busy_since = None

    def _write_frame(self, proc: subprocess.Popen, path: Path, digest: str) -> None:
        size = path.stat().st_size
        proc.stdin.write(frame_header(path.name, size, digest))
        with open(path, "rb") as fh:
            while block := fh.read(CHUNK):
                proc.stdin.write(block)
                self._progress()

    def send(self, parts: list[PartFiles]) -> None:
        """Write the batch's frames, then read one answer per file: the batch is in the inbox on return."""
        names = batch_names(parts)
        digests = tar_digests(parts)
        errors: list[str] = []
        retryable = True
        with self._lock:
            self._busy_since = time.monotonic()
            try:
                proc = self._ensure()
                for tar, manifest in parts:
                    self._write_frame(proc, tar, digests[tar.name])
                    self._write_frame(proc, manifest, sha256_file(manifest))
                proc.stdin.flush()
                for _ in names:
                    answer = self._read_answer(proc)
                    if "error" in answer:
                        errors.append(f"{answer.get('name')}: {answer['error']}")
                        retryable = retryable and bool(answer.get("retryable"))
            except (OSError, ValueError) as exc:  # a broken pipe, a closed file
                raise self._broken(str(exc)) from None
            finally:
                self._busy_since = None
        if errors:
            raise TransferError(f"the receiver refused {describe_batch(parts)}: " + "; ".join(errors), retryable=retryable)

    def move(self, parts: list[PartFiles]) -> None:
        """Nothing to do: the receiver published each part when its manifest arrived."""
        batch_names(parts)

    def close(self) -> None:
        """End the receiver (end of input), then the master."""
        self._closed.set()
        with self._lock:
            self._drop()
        super().close()
