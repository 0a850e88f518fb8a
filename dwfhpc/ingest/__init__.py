"""The cluster side: inbox -> verified parts -> job arrays (submitit / PBS) -> collected results."""

from .daemon import Ingest, IngestOptions
from .executors import EXECUTORS, ArrayExecutor, make_executor
from .inbox import Inbox
from .submitter import Submitter

__all__ = ["EXECUTORS", "ArrayExecutor", "Ingest", "IngestOptions", "Inbox", "Submitter", "make_executor"]
