"""The ssh side both ssh transports share: one checked ssh command per stream, through its own ControlMaster.

:class:`SshLink` checks ``transport.host`` / ``user`` / ``known_hosts`` / ``key``, builds the ssh
argument list (host keys always checked against the configured known_hosts, ``BatchMode``, one
OpenSSH ControlMaster per stream under :func:`control_dir` so each part pays no connection
set-up), creates the receiver's staging and inbox (:meth:`SshLink.prepare`, the call that opens
the master), lists a folder there with ``rsync --list-only`` for the end-of-night count
(:meth:`SshLink.listing`, :func:`parse_list_only`) and closes the master (:meth:`SshLink.close`).
:class:`~dwfhpc.link.rsync.SshTransport` and :class:`~dwfhpc.link.stream.StreamTransport` add how
parts travel.

OpenSSH always hands a remote command to the login shell: the two folder paths from the config
are quoted with :func:`shlex.quote` and part names are checked against
:data:`~dwfhpc.link.protocol.PART_FILE_RE` before they reach one. Local commands are argument
lists, never ``shell=True``; rsync's own remote arguments are protected with ``--secluded-args``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import sysrsync

from ..errors import ConfigError
from .protocol import Transport, run_command

if TYPE_CHECKING:
    from ..config import SiteSettings, TransportSettings

_SAFE_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
_SAFE_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")
_LIST_LINE = re.compile(r"^(?P<mode>[-dlcbps][rwxsStT-]{9})\s+(?P<size>[\d,]+)\s+\S+\s+\S+\s+(?P<name>.+)\Z")


def control_dir(key: str) -> Path:
    """A short folder for ControlMaster sockets (a Unix socket path must stay under ~100 bytes).

    Stable for a given journal, so a push restarted after a crash finds (or cleans up) its masters.
    """
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    d = Path(tempfile.gettempdir()) / f"dwfcm-{os.getuid()}-{digest}"
    d.mkdir(mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    return d


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


class SshLink(Transport):
    """``user@host`` through this stream's own ControlMaster: prepare, listing and close (see the module text)."""

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

    @property
    def rsh(self) -> str:
        """The ``rsync -e`` string (rsync splits it itself; every word quoted, no shell involved)."""
        return " ".join(shlex.quote(a) for a in self.ssh)

    def run(self, argv: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
        """Every command this stream runs (rsync, ssh) goes through here: :func:`~dwfhpc.link.protocol.run_command`."""
        return run_command(argv, timeout, what)

    def prepare(self) -> None:
        """Make sure staging and inbox exist (rsync creates only the last path element).

        This first ssh call through the stream's ControlPath (``ControlMaster=auto``) opens its master.
        """
        self.run(self.ssh + [self.target, f"mkdir -p {shlex.quote(self.staging)} {shlex.quote(self.inbox)}"],
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
        proc = self.run(argv, self.settings.timeout_seconds * 2, f"listing {folder} on {self.settings.host}")
        return parse_list_only(proc.stdout)

    def close(self) -> None:
        """Close this stream's ControlMaster (if it is open)."""
        if any(self.control_path.parent.glob(f"cm-*-{self.stream}")):
            subprocess.run(self.ssh + ["-O", "exit", self.target], capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL)
