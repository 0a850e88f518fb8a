"""The telescope side: watch the raw folder, pack exposures into parts, send them on N streams.

Public API: :class:`Push` + :class:`PushOptions` (one run: its settings are ``site.push``, the options
are once / quiet / live), :class:`Journal` (the SQLite sender journal), :class:`Watcher`,
:class:`LocalTransport` / :class:`SshTransport` / ``stream.StreamTransport``, :func:`make_transports`.

Inside a run (``runner``): ``watcher`` (complete exposures) -> ``scheduler`` (which next; the part queue) ->
``packer`` (parts, in a forkserver pool) -> ``sender`` (N streams, one retry helper) -> ``transport``
(rsync over ssh; or ``stream``: one long-lived ``dwfhpc receive`` per stream, whose far end is
``receiver``); ``reconciler`` resumes a killed run and counts what arrived at the end of the night; ``view`` shows it.
"""

from .journal import ExposureRow, Journal, SentPart
from .runner import Push, PushOptions, PushOutcome
from .scheduler import MODES, Policy
from .transport import LocalTransport, SshTransport, Transport, classify, make_transports, parse_list_only
from .watcher import Watcher, is_temporary

__all__ = ["ExposureRow", "Journal", "SentPart", "Push", "PushOptions", "PushOutcome", "MODES", "Policy",
           "LocalTransport", "SshTransport", "Transport", "classify", "make_transports", "parse_list_only",
           "Watcher", "is_temporary"]
