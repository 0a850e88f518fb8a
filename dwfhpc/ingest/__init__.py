"""The cluster side: inbox -> verified parts -> job arrays (submitit / PBS) -> collected results.

``daemon``     :class:`Ingest`: one poll is :meth:`Ingest.step`; :meth:`Ingest.run` polls until stopped,
               drained or ``until()``, telling an ``observer`` each :class:`Step` (reprocess and the
               benchmark use these); :class:`IngestOptions` are the run's own options
``inbox``      complete parts verified and moved to the parts store, bad ones quarantined
``masters``    a night's masters built once its bias and flat tasks are final
``submitter``  queued tasks -> one spec and one array per part chunk, within ``throttle``'s limits
``collector``  one scheduler query per poll, then each active task's outcome (retries, lost tasks)
``executors``  local / slurm / pbs (and warm workers) behind one interface
``status``     what ``dwfhpc status`` shows; ``emit`` scripts for manual submission
"""

from .daemon import Ingest, IngestOptions, Step
from .executors import EXECUTORS, ArrayExecutor, make_executor
from .inbox import Inbox
from .submitter import Submitter

__all__ = ["EXECUTORS", "ArrayExecutor", "Ingest", "IngestOptions", "Inbox", "Step", "Submitter", "make_executor"]
