"""The telescope side: watch the raw folder, pack exposures into parts, send them on N streams.

Public API: :class:`Push` + :class:`PushOptions` (one run: its settings are ``site.push``, the options
are once / quiet / live), :class:`Journal` (the SQLite sender journal), :class:`Watcher`, and from
:mod:`dwfhpc.link` (how parts travel) :class:`LocalTransport` / :class:`SshTransport`,
:func:`make_transports` (``dwfhpc.link.stream.StreamTransport`` with ``transport.stream``).

Inside a run (``runner``): ``watcher`` (complete exposures) -> ``order`` (which next; the part queue) ->
``packer`` (parts, in a forkserver pool) -> ``sender`` (N streams, one retry helper) -> a
:mod:`dwfhpc.link` transport per stream (rsync over ssh; or one long-lived ``dwfhpc receive`` per
stream); ``reconciler`` resumes a killed run and counts what arrived at the end of the night; ``view`` shows it.
"""

from ..link import Transport, classify, make_transports
from ..link.rsync import LocalTransport, SshTransport
from ..link.ssh import parse_list_only
from .journal import ExposureRow, Journal, SentPart
from .order import MODES, Policy
from .runner import Push, PushOptions, PushOutcome
from .watcher import Watcher, is_temporary

__all__ = ["ExposureRow", "Journal", "SentPart", "Push", "PushOptions", "PushOutcome", "MODES", "Policy",
           "LocalTransport", "SshTransport", "Transport", "classify", "make_transports", "parse_list_only",
           "Watcher", "is_temporary"]
