"""The cluster side: inbox -> verified parts -> job arrays (submitit / PBS) -> collected results."""

from .daemon import Ingest, IngestOptions, Step
from .executors import EXECUTORS, ArrayExecutor, make_executor
from .inbox import Inbox
from .submitter import Submitter

__all__ = ["EXECUTORS", "ArrayExecutor", "Ingest", "IngestOptions", "Inbox", "Step", "Submitter", "make_executor"]
