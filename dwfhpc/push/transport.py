"""Carry a part (tarball, then manifest) into the receiver's inbox: rsync to staging, then move.

Two transports: :class:`LocalTransport` (the receiver's folders are mounted here: rsync then
``os.replace``) and :class:`SshTransport` (rsync over ssh, one OpenSSH ControlMaster per stream so
each part pays no connection set-up; host keys always checked against the configured known_hosts).

Delivery of a batch of parts (one or more) in two steps, :meth:`Transport.send` then
:meth:`Transport.move`: ONE ``rsync -a --partial-dir=.rsync-partial --compare-dest=<inbox> TAR MANIFEST
[TAR MANIFEST ...] <staging>/`` call for the whole batch (an interrupted transfer resumes from the
partial file; a file already identical in the inbox, or complete in staging, is not sent again),
then ONE remote command moving the batch staging -> inbox, each part's tarball first and its
manifest last, so the receiver never sees a manifest without its complete tarball. Both steps are
idempotent, so a batch interrupted anywhere is simply delivered again. The streams
(:mod:`dwfhpc.push.sender`) may run the move of one batch while the next batch's rsync is on the
wire; :meth:`Transport.deliver` does both steps for one part.

The rsync command lines are built by :func:`sysrsync.get_rsync_command` (:func:`rsync_command`) and run
by :func:`_run` (``subprocess.run`` on the argument list, stderr kept to decide whether to retry).
sysrsync takes one source and builds ``-e`` only from a key, a port and the host-key switch; the
part's other file and our ``-e ssh ...`` (known_hosts, ControlPath, BatchMode) go in its ``options``,
which it places, in order, before the source.

The remote move is ``ssh HOST 'mkdir -p INBOX && for f in TAR1 MANIFEST1 TAR2 ...; do ...mv -f -- STAGING/"$f" INBOX/"$f"...'``.
OpenSSH always hands a remote command to the login shell, so no remote command can avoid a shell:
instead, names are checked against :data:`dwfhpc.layout.PART_RE` (letters, digits, ``_``, ``-``,
``.``) and refused otherwise, and the two folder paths from the config are quoted with
:func:`shlex.quote`. Nothing a raw file's name contains ever reaches either shell: part names are
built from header values (``<expid>.p<k>of<K>``). Local commands are argument lists, never
``shell=True``; rsync's own remote arguments are protected with ``--secluded-args``.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import sysrsync

from ..config import SiteSettings, TransportSettings
from ..errors import ConfigError, TransferError
from ..layout import PART_RE

#: rsync exit codes worth retrying: socket I/O, protocol stream, partial transfer, timeouts, ssh.
RETRYABLE_RSYNC = {10, 12, 23, 30, 35, 255}
_RETRYABLE_TEXT = ("connection refused", "connection reset", "connection timed out", "timed out",
                   "broken pipe", "connection closed", "no route to host", "network is unreachable",
                   "connection unexpectedly closed", "control socket", "mux_client")
_PART_FILE = re.compile(r"^(?P<stem>.+)\.(tar|manifest\.json)$")
_SAFE_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_SAFE_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_LIST_LINE = re.compile(r"^(?P<mode>[-dlcbps][rwxsStT-]{9})\s+(?P<size>[\d,]+)\s+\S+\s+\S+\s+(?P<name>.+)$")


def check_part_file_name(name: str) -> str:
    """Accept only ``<expid>.p<k>of<K>.tar`` / ``.manifest.json`` names; raise otherwise."""
    m = _PART_FILE.match(name)
    if not m or not PART_RE.match(m["stem"]) or "/" in name:
        raise TransferError(f"refusing to send a file whose name is not a part name: {name!r}", name)
    return name


#: ssh's words for a refusal that no retry can change (a wrong or unknown host key, a refused login)
_PERMANENT_TEXT = ("host key verification failed", "remote host identification has changed",
                   "permission denied (publickey")


def classify(returncode: int, stderr: str) -> bool:
    """True when a failed rsync/ssh call may succeed if tried again (never for a refused host key)."""
    text = stderr.lower()
    if any(s in text for s in _PERMANENT_TEXT):
        return False
    return returncode in RETRYABLE_RSYNC or any(s in text for s in _RETRYABLE_TEXT)


def _run(argv: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
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


@dataclass
class SendResult:
    bytes: int
    seconds: float


PartFiles = tuple[Path, Path]  # (tarball, manifest)


def _batch_names(parts: list[PartFiles]) -> list[str]:
    """The batch's file names in move order (each part's tarball, then its manifest); all checked."""
    if not parts:
        raise TransferError("nothing to deliver: empty batch")
    return [check_part_file_name(f.name) for tar, man in parts for f in (tar, man)]


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(4 << 20):
            h.update(block)
    return h.hexdigest()


def tar_digests(parts: list[PartFiles]) -> dict[str, str]:
    """Each tarball's sha256 as its manifest (written by us, beside it) records it: checked before the move."""
    import json

    out = {}
    for tar, manifest in parts:
        try:
            digest = json.loads(Path(manifest).read_text()).get("tar_sha256", "")
        except (OSError, ValueError) as exc:
            raise TransferError(f"cannot read the manifest ({exc})", manifest) from None
        if not _SHA256.match(str(digest)):
            raise TransferError("manifest has no valid tar_sha256", manifest)
        out[check_part_file_name(Path(tar).name)] = digest
    return out


class Transport:
    """Base: ``prepare()``, ``send(parts)`` + ``move(parts)`` (= ``deliver_many``), ``listing()``, ``close()``."""

    stream: int = 0

    def prepare(self) -> None:
        """Get the receiver ready before the first delivery (nothing to do by default)."""

    def send(self, parts: list[PartFiles]) -> None:  # pragma: no cover - interface
        """Copy the batch's files into the receiver's staging folder (one rsync call)."""
        raise TypeError("use LocalTransport or SshTransport")

    def move(self, parts: list[PartFiles]) -> None:  # pragma: no cover - interface
        """Move the batch staging -> inbox (one command), each tarball before its manifest.

        A file already in the inbox and gone from staging counts as moved (a repeated move); one in
        neither raises a retryable :class:`TransferError` (send the batch again).
        """
        raise TypeError("use LocalTransport or SshTransport")

    def deliver_many(self, parts: list[PartFiles]) -> None:
        """``send`` then ``move``: the batch is in the inbox when this returns."""
        self.send(parts)
        self.move(parts)

    def deliver(self, tar: Path, manifest: Path) -> None:
        """Deliver one part (tarball, then manifest)."""
        self.deliver_many([(tar, manifest)])

    def listing(self, folder: str | None = None) -> dict[str, int]:  # pragma: no cover - interface
        raise TypeError("use LocalTransport or SshTransport")

    def close(self) -> None:
        """Release connections (nothing for local)."""


def _send_options(t: TransportSettings) -> list[str]:
    opts = ["-a", "--partial-dir=.rsync-partial", f"--timeout={t.timeout_seconds}", "--secluded-args"]
    if t.bwlimit_kbps:
        opts.append(f"--bwlimit={t.bwlimit_kbps}")
    return opts


def rsync_command(files: list[Path], folder: str, options: list[str], remote: str | None = None) -> list[str]:
    """``rsync OPTIONS -- FILE... [REMOTE:]FOLDER/`` through :func:`sysrsync.get_rsync_command`.

    sysrsync takes a single source: the last file is its ``source``, the others follow ``--`` at the
    end of ``options`` (which it places right before the source). sysrsync strips one trailing slash
    from the destination, so it is given two: rsync gets ``FOLDER/`` (always a folder, never a
    rename), and ``/`` stays ``/`` instead of becoming the remote home.
    """
    *others, last = [str(f) for f in files]
    return sysrsync.get_rsync_command(source=last, destination=folder.rstrip("/") + "//", destination_ssh=remote,
                                      sync_source_contents=False, options=[*options, "--", *others])


class LocalTransport(Transport):
    """The receiver's staging and inbox are folders on this machine (or a mounted file system)."""

    def __init__(self, settings: TransportSettings, staging: Path, inbox: Path, stream: int = 0):
        self.settings = settings
        self.staging = Path(staging)
        self.inbox = Path(inbox)
        self.stream = stream

    def send(self, parts: list[PartFiles]) -> None:
        _batch_names(parts)
        self.staging.mkdir(parents=True, exist_ok=True)
        self.inbox.mkdir(parents=True, exist_ok=True)
        argv = rsync_command([f for part in parts for f in part], str(self.staging),
                             _send_options(self.settings) + [f"--compare-dest={self.inbox.resolve()}"])
        _run(argv, self.settings.timeout_seconds * 4 * len(parts), f"rsync {_what(parts)}")

    def move(self, parts: list[PartFiles]) -> None:
        names = _batch_names(parts)
        digests = tar_digests(parts)
        self.inbox.mkdir(parents=True, exist_ok=True)
        for name in names:
            src, dst = self.staging / name, self.inbox / name
            if src.exists() and name in digests and _file_sha256(src) != digests[name]:
                src.unlink()  # damaged in staging: never published; the batch is sent again
                raise TransferError("damaged in staging (sha256 differs from the manifest): sending it again",
                                    src, retryable=True)
            if src.exists():
                os.replace(src, dst)
            elif not dst.exists():
                raise TransferError("vanished from staging before it reached the inbox", src, retryable=True)

    def listing(self, folder: str | None = None) -> dict[str, int]:
        root = Path(folder) if folder else self.inbox
        out: dict[str, int] = {}
        if root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for f in filenames:
                    if not f.startswith("."):
                        out[f] = os.path.getsize(os.path.join(dirpath, f))
        return out


def control_dir(key: str) -> Path:
    """A short folder for ControlMaster sockets (a Unix socket path must stay under ~100 bytes).

    Stable for a given journal, so a push restarted after a crash finds (or cleans up) its masters.
    """
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    d = Path(tempfile.gettempdir()) / f"dwfcm-{os.getuid()}-{digest}"
    d.mkdir(mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    return d


class SshTransport(Transport):
    """rsync over ssh to ``user@host``, through this stream's own ControlMaster."""

    def __init__(self, settings: TransportSettings, site: SiteSettings | None, stream: int, cm_dir: Path):
        t = settings
        if not t.host or not _SAFE_HOST.match(t.host):
            raise ConfigError(f"transport.host must be a host name or address (got {t.host!r})")
        if t.user and not _SAFE_USER.match(t.user):
            raise ConfigError(f"transport.user is not a valid user name (got {t.user!r})")
        if not t.known_hosts:
            raise ConfigError("transport.known_hosts is required for ssh: host keys are always checked")
        resolve = site.path if site else (lambda v: Path(os.path.expanduser(v)) if v else None)
        known_hosts = resolve(t.known_hosts)
        if not known_hosts.exists():
            raise ConfigError("known_hosts file does not exist", known_hosts)
        key = resolve(t.key) if t.key else None
        if key is not None and not key.exists():
            raise ConfigError("ssh key does not exist", key)
        self.settings = t
        self.stream = stream
        self.target = f"{t.user}@{t.host}" if t.user else t.host
        self.control_path = Path(cm_dir) / f"cm-%C-{stream}"
        self.ssh = ["ssh", "-p", str(t.port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                    "-o", f"UserKnownHostsFile={known_hosts}", "-o", "ControlMaster=auto",
                    "-o", f"ControlPath={self.control_path}", "-o", f"ControlPersist={t.control_persist}",
                    "-o", f"ConnectTimeout={min(t.timeout_seconds, 30)}", "-o", "ServerAliveInterval=15",
                    "-o", "ServerAliveCountMax=4"]
        if key is not None:
            self.ssh += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
        for opt in t.ssh_options:
            self.ssh += ["-o", opt]
        self.staging = t.staging.rstrip("/") or "/"
        self.inbox = t.inbox.rstrip("/") or "/"
        self.compare_dest = _compare_dest(self.staging, self.inbox)

    @property
    def rsh(self) -> str:
        """The ``rsync -e`` string (rsync splits it itself; every word quoted, no shell involved)."""
        return " ".join(shlex.quote(a) for a in self.ssh)

    def send(self, parts: list[PartFiles]) -> None:
        _batch_names(parts)
        t = self.settings
        argv = rsync_command([f for part in parts for f in part], self.staging,
                             _send_options(t) + ["-e", self.rsh, f"--compare-dest={self.compare_dest}"], self.target)
        _run(argv, t.timeout_seconds * 4 * len(parts), f"rsync {_what(parts)}")

    def move(self, parts: list[PartFiles]) -> None:
        names = _batch_names(parts)
        digests = tar_digests(parts)
        t = self.settings
        st, ib = shlex.quote(self.staging), shlex.quote(self.inbox)
        # each staged tarball is checked against its manifest's sha256 before anything of the batch is
        # published (a damaged one is removed and the batch sent again); names and digests are checked patterns
        check = "".join(f"if [ -e {st}/{name} ] && ! echo {digest}' '' '{st}/{name} | sha256sum -c --status; "
                        f"then rm -f -- {st}/{name}; echo \"{name} damaged in staging\" >&2; exit 4; fi; "
                        for name, digest in digests.items())
        script = (f"mkdir -p {ib} && {check}for f in {' '.join(names)}; do "
                  f"if [ -e {st}/\"$f\" ]; then mv -f -- {st}/\"$f\" {ib}/\"$f\" || exit 1; "
                  f"elif [ ! -e {ib}/\"$f\" ]; then echo \"$f vanished from staging\" >&2; exit 3; fi; done")
        try:
            _run(self.ssh + [self.target, script], t.timeout_seconds, f"moving {_what(parts)} into the inbox")
        except TransferError as exc:
            if "vanished" in str(exc) or "damaged in staging" in str(exc):
                exc.retryable = True
            raise

    def prepare(self) -> None:
        """Make sure staging and inbox exist (rsync creates only the last path element).

        This first ssh call through the stream's ControlPath (``ControlMaster=auto``) opens its master.
        """
        _run(self.ssh + [self.target, f"mkdir -p {shlex.quote(self.staging)} {shlex.quote(self.inbox)}"],
             self.settings.timeout_seconds, "creating the receiver's staging folder")

    def listing(self, folder: str | None = None) -> dict[str, int]:
        """Names and sizes of files under ``folder`` (default: the inbox) via ``rsync --list-only``."""
        folder = folder or self.inbox
        # sysrsync always writes a destination; with an explicit --list-only rsync lists the source and
        # transfers nothing (rsync(1): its use "to turn a copy command that includes a destination arg
        # into a file-listing command")
        argv = sysrsync.get_rsync_command(source=folder, source_ssh=self.target, destination=".",
                                          sync_source_contents=True,
                                          options=["--list-only", "-r", "--secluded-args", "-e", self.rsh])
        proc = _run(argv, self.settings.timeout_seconds * 2, f"listing {folder} on {self.settings.host}")
        return parse_list_only(proc.stdout)

    def close(self) -> None:
        if any(self.control_path.parent.glob(f"cm-*-{self.stream}")):
            subprocess.run(self.ssh + ["-O", "exit", self.target], capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL)


def _what(parts: list[PartFiles]) -> str:
    """A batch in messages: ``X.p1of4`` or ``X.p1of4 (+2 more)``."""
    first = parts[0][0].name.removesuffix(".tar")
    return first if len(parts) == 1 else f"{first} (+{len(parts) - 1} more)"


def _compare_dest(staging: str, inbox: str) -> str:
    """The inbox as rsync's ``--compare-dest`` wants it: absolute, or relative to staging."""
    if posixpath.isabs(inbox):
        return inbox
    if posixpath.isabs(staging):
        raise ConfigError("transport.inbox must be an absolute path when transport.staging is")
    return posixpath.relpath(inbox, staging)


def parse_list_only(text: str) -> dict[str, int]:
    """``rsync --list-only`` output -> {basename: size} of regular files (dotfiles left out)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = _LIST_LINE.match(line)
        if not m or m["mode"][0] != "-":
            continue
        name = m["name"].rsplit("/", 1)[-1]
        if not name.startswith(".") and "/." not in m["name"]:
            out[name] = int(m["size"].replace(",", ""))
    return out


def make_transports(site: SiteSettings, streams: int, key: str) -> list[Transport]:
    """One transport per stream, from the site's ``transport`` section."""
    t = site.transport
    if t.kind == "local":
        return [LocalTransport(t, site.path(t.staging), site.path(t.inbox), i) for i in range(streams)]
    cm = control_dir(key)
    if t.stream:
        from .stream import StreamTransport

        return [StreamTransport(t, site, i, cm) for i in range(streams)]
    return [SshTransport(t, site, i, cm) for i in range(streams)]
