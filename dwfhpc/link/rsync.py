"""Carry a part (tarball, then manifest) into the receiver's inbox: rsync to staging, then move.

Two transports: :class:`LocalTransport` (the receiver's folders are mounted here: rsync then
:func:`~dwfhpc.link.protocol.publish_part`) and :class:`SshTransport` (rsync over ssh through the
stream's ControlMaster, :class:`~dwfhpc.link.ssh.SshLink`).

Delivery of a batch of parts (one or more) in two steps, :meth:`send` then :meth:`move`: ONE
``rsync -a --partial-dir=.rsync-partial --compare-dest=<inbox> TAR MANIFEST [TAR MANIFEST ...]
<staging>/`` call for the whole batch (an interrupted transfer resumes from the partial file; a
file already identical in the inbox, or complete in staging, is not sent again), then ONE move
staging -> inbox by the publish rule (:mod:`dwfhpc.link.protocol`: each part's tarball first,
checked against its manifest's sha256, its manifest last), so the receiver never sees a manifest
without its complete tarball. Both steps are idempotent, so a batch interrupted anywhere is simply
delivered again. The streams (:mod:`dwfhpc.push.sender`) may run the move of one batch while the
next batch's rsync is on the wire; :meth:`~dwfhpc.link.protocol.Transport.deliver` does both steps
for one part.

The rsync command lines are built by :func:`sysrsync.get_rsync_command` (:func:`rsync_command`) and
run by :func:`~dwfhpc.link.protocol.run_command` (``subprocess.run`` on the argument list, stderr
kept to decide whether to retry). sysrsync takes one source and builds ``-e`` only from a key, a
port and the host-key switch; the part's other file and our ``-e ssh ...`` (known_hosts,
ControlPath, BatchMode) go in its ``options``, which it places, in order, before the source.

The remote move is ``ssh HOST 'mkdir -p INBOX && <check each staged tarball's sha256> && for f in
TAR1 MANIFEST1 TAR2 ...; do ...mv -f -- STAGING/"$f" INBOX/"$f"...'``: the publish rule in shell.
OpenSSH always hands a remote command to the login shell, so no remote command can avoid a shell:
instead, names are checked against :data:`~dwfhpc.link.protocol.PART_FILE_RE` (letters, digits,
``_``, ``-``, ``.``) and refused otherwise, digests against 64 hex digits, and the two folder paths
from the config are quoted with :func:`shlex.quote`. Nothing a raw file's name contains ever
reaches either shell: part names are built from header values (``<expid>.p<k>of<K>``).
"""

from __future__ import annotations

import os
import posixpath
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import sysrsync

from ..errors import ConfigError, TransferError
from .protocol import (PartFiles, PublishError, Transport, batch_names, describe_batch, publish_part, run_command,
                       tar_digests)
from .ssh import SshLink

if TYPE_CHECKING:
    from ..config import SiteSettings, TransportSettings


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
        batch_names(parts)
        self.staging.mkdir(parents=True, exist_ok=True)
        self.inbox.mkdir(parents=True, exist_ok=True)
        argv = rsync_command([f for part in parts for f in part], str(self.staging),
                             _send_options(self.settings) + [f"--compare-dest={self.inbox.resolve()}"])
        run_command(argv, self.settings.timeout_seconds * 4 * len(parts), f"rsync {describe_batch(parts)}")

    def move(self, parts: list[PartFiles]) -> None:
        batch_names(parts)
        digests = tar_digests(parts)
        self.inbox.mkdir(parents=True, exist_ok=True)
        for tar, manifest in parts:
            try:
                publish_part(self.staging, self.inbox, tar.name, manifest.name, digests[tar.name], repeated=True)
            except PublishError as exc:  # damaged (removed) or vanished: the batch is sent again
                raise TransferError(exc.text, exc.path, retryable=True) from None

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


def _compare_dest(staging: str, inbox: str) -> str:
    """The inbox as rsync's ``--compare-dest`` wants it: absolute, or relative to staging."""
    if posixpath.isabs(inbox):
        return inbox
    if posixpath.isabs(staging):
        raise ConfigError("transport.inbox must be an absolute path when transport.staging is")
    return posixpath.relpath(inbox, staging)


class SshTransport(SshLink):
    """rsync over ssh to ``user@host``, through this stream's own ControlMaster."""

    def __init__(self, settings: TransportSettings, site: SiteSettings | None, stream: int, cm_dir: Path):
        super().__init__(settings, site, stream, cm_dir)
        self.compare_dest = _compare_dest(self.staging, self.inbox)

    def send(self, parts: list[PartFiles]) -> None:
        batch_names(parts)
        t = self.settings
        argv = rsync_command([f for part in parts for f in part], self.staging,
                             _send_options(t) + ["-e", self.rsh, f"--compare-dest={self.compare_dest}"], self.target)
        self.run(argv, t.timeout_seconds * 4 * len(parts), f"rsync {describe_batch(parts)}")

    def move(self, parts: list[PartFiles]) -> None:
        names = batch_names(parts)
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
            self.run(self.ssh + [self.target, script], t.timeout_seconds, f"moving {describe_batch(parts)} into the inbox")
        except TransferError as exc:
            if "vanished" in str(exc) or "damaged in staging" in str(exc):
                exc.retryable = True
            raise
