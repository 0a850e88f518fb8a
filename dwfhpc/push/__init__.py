"""The telescope side: watch the raw folder, pack exposures into parts, send them on N streams.

Public API: :class:`Push` + :class:`PushOptions` (one run), :class:`Journal` (the SQLite sender
journal), :class:`Watcher`, :class:`LocalTransport` / :class:`SshTransport`, :func:`make_transports`.

Inside a run: ``watcher`` (complete exposures) -> ``scheduler`` (which next; the part queue) ->
``packer`` (parts, in a forkserver pool) -> ``sender`` (N streams, one retry helper);
``reconciler`` resumes a killed run and counts what arrived at the end of the night.
"""

from .journal import ExposureRow, Journal, SentPart
from .runner import Push, PushOptions, PushOutcome
from .scheduler import MODES, Policy
from .transport import LocalTransport, SshTransport, Transport, classify, make_transports, parse_list_only
from .watcher import Watcher, is_temporary

__all__ = ["ExposureRow", "Journal", "SentPart", "Push", "PushOptions", "PushOutcome", "MODES", "Policy",
           "LocalTransport", "SshTransport", "Transport", "classify", "make_transports", "parse_list_only",
           "Watcher", "is_temporary"]
