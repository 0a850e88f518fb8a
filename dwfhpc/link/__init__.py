"""The link: how a part (tarball + manifest) gets from the telescope into the cluster's inbox.

Both ends live here. The telescope side (``dwfhpc push``, through :mod:`dwfhpc.push.sender`) holds one
transport per stream; the cluster side is ``dwfhpc receive`` (:mod:`.receiver`), which a streamed
transport starts over ssh. Whatever the transport, a part is published by one rule: its tarball
into the inbox first, only when it matches the manifest's sha256, its manifest last.

* :mod:`.protocol`: what both ends share (part-file names, the manifest's ``tar_sha256``, the publish
  rule, the ``dwfhpc-receive/1`` frame format, command running and retry classification, the
  :class:`~.protocol.Transport` contract); imports neither of the others.
* :mod:`.rsync`: :class:`~.rsync.LocalTransport` (mounted folders) and :class:`~.rsync.SshTransport`
  (``rsync`` into staging, then one remote move).
* :mod:`.ssh`: :class:`~.ssh.SshLink`, the ssh command through each stream's ControlMaster, shared
  by both ssh transports (prepare, listing, close), and :func:`~.ssh.control_dir`.
* :mod:`.stream`: :class:`~.stream.StreamTransport` (``transport.stream: true``): one long-lived
  ``dwfhpc receive`` per stream, fed frames.
* :mod:`.receiver`: :func:`~.receiver.serve`, the cluster end of a stream.

Public names here: :func:`make_transports` (one transport per stream from the site config) and
the protocol's :class:`~.protocol.Transport`, :data:`~.protocol.PartFiles`,
:func:`~.protocol.check_part_file_name`, :func:`~.protocol.classify`. The transports are imported
from their modules (and re-exported by :mod:`dwfhpc.push`); this package imports only
:mod:`.protocol` so that ``dwfhpc receive`` on the cluster starts without rsync, ssh or config code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .protocol import PartFiles, Transport, check_part_file_name, classify

if TYPE_CHECKING:
    from ..config import SiteSettings


def make_transports(site: SiteSettings, streams: int, key: str) -> list[Transport]:
    """One transport per stream, from the site's ``transport`` section (``key``: names the ssh masters' folder)."""
    t = site.transport
    if t.kind == "local":
        from .rsync import LocalTransport

        return [LocalTransport(t, site.path(t.staging), site.path(t.inbox), i) for i in range(streams)]
    from .ssh import control_dir

    cm = control_dir(key)
    if t.stream:
        from .stream import StreamTransport

        return [StreamTransport(t, site, i, cm) for i in range(streams)]
    from .rsync import SshTransport

    return [SshTransport(t, site, i, cm) for i in range(streams)]


__all__ = ["PartFiles", "Transport", "check_part_file_name", "classify", "make_transports"]
