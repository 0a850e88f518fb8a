"""One interface for the schedulers ingest submits to: an array of node tasks per part chunk.

An executor submits an array (task ``i`` runs ``dwfhpc node run SPEC --index i``), answers which of
our tasks are still queued or running in **one** scheduler query, and says how a task ended: its
result (the node leaves ``<spec stem>.result-<i>.json`` beside the spec, whoever launched it), a
Python error caught by submitit, or nothing (the task vanished: cancelled, killed, timed out).

Nodes whose resources keep failing are left out of new submissions through :meth:`ArrayExecutor.exclude_nodes`
(Slurm: ``--exclude``; warm workers: their workers on those nodes drain and successors start elsewhere).
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from pathlib import Path

from ...errors import DwfError
from ...node import result_path
from ...node.result import ErrorKind, ResultError, TaskResult, TaskStatus
from ...states import QueueEntry


@dataclass(frozen=True)
class ArrayRequest:
    """One array: ``ntasks`` tasks of one spec, with the resources of this attempt."""

    part: str
    name: str  # dwf-<expid>-p<k>
    spec: Path
    ntasks: int
    mem_gb: float
    time_minutes: int


@dataclass(frozen=True)
class WorkerRequest:
    """An array of ``n`` warm workers pulling tickets from ``queue_root`` (see :mod:`dwfhpc.workers`).

    The workers read ``stop_minutes`` and the scratch settings from ``<queue_root>/settings.json``
    (:class:`~dwfhpc.workers.settings.WorkerSettings`, written before the submission), not from the job.
    """

    name: str  # dwf-workers
    queue_root: Path
    n: int
    mem_gb: float
    time_minutes: int
    stop_minutes: float
    scratch_vars: list[str]
    scratch_fallback: str


@dataclass(frozen=True)
class Submitted:
    job_id: str | None  # the array's id (None where the scheduler has none, e.g. local processes)
    task_ids: list[str]  # one per index
    folder: str | None  # where the scheduler's logs of this array are


@dataclass(frozen=True)
class Outcome:
    """How a finished task ended: ``result`` from the node, or ``error`` when it raised before giving one.

    A result given as a JSON object (submitit's pickle of the node's return value) is validated into
    a :class:`TaskResult`; one that does not validate becomes an ``error`` saying why.
    """

    result: TaskResult | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.result, Mapping):
            try:
                object.__setattr__(self, "result", TaskResult.from_dict(self.result))
            except ResultError as exc:
                object.__setattr__(self, "result", None)
                object.__setattr__(self, "error", f"unreadable result: {exc}")

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok

    @property
    def error_kind(self) -> ErrorKind | None:
        """Why it failed: the node's word, else what the scheduler's text says (out of memory, timeout)."""
        if self.ok:
            return None
        if self.result is not None:
            return self.result.error_kind or ErrorKind.OTHER
        return ErrorKind.from_scheduler(reason_from_text(self.error or "")) or ErrorKind.OTHER

    @property
    def message(self) -> str:
        """The failure's reason as one line."""
        return (self.result.error if self.result is not None else None) or self.error or "task failed without a reason"


#: why a task left the queue without a result, from the scheduler's own words in its log
_GONE_PATTERNS = (
    ("timeout", re.compile(r"DUE TO TIME LIMIT|TIMEOUT|time limit", re.I)),
    ("oom", re.compile(r"oom-kill|out of memory|OUT_OF_MEMORY|MemoryError", re.I)),
    ("cancelled", re.compile(r"CANCELLED", re.I)),
    ("node failure", re.compile(r"NODE_FAIL|DUE TO NODE FAILURE", re.I)),
    # srun's "task 0: Killed" is any SIGKILL (kill -9, a node's cleanup); Slurm's OOM kill says oom-kill above
    ("killed (SIGKILL)", re.compile(r"\bKilled\b")),
)


def reason_from_text(text: str) -> str | None:
    for reason, pattern in _GONE_PATTERNS:
        if pattern.search(text):
            return reason
    return None


def read_result_file(spec: str | Path, index: int) -> TaskResult | None:
    """The node's result for task ``index`` of ``spec``, or None when there is none (yet).

    A file that is JSON but not a valid result (unknown schema version, wrong types) is a failed
    result of kind ``other`` naming the file and the problem, so the task is retried, not waited for.
    """
    path = result_path(spec, index)
    try:
        text = path.read_text()
        data = json.loads(text)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # being written over NFS, or damaged: the next poll looks again
    try:
        return TaskResult.from_dict(data)
    except ResultError as exc:
        return TaskResult(status=TaskStatus.ERROR, error=f"{path}: {exc}", error_kind=ErrorKind.OTHER)


class ArrayExecutor(ABC):
    """A scheduler behind one interface (submitit local / Slurm, PBS via templates)."""

    name: str = "?"
    #: what one :meth:`submit` makes, for the logs: a job array, or tickets for warm workers
    submits_as: str = "array"
    #: whether :meth:`exclude_nodes` steers new submissions away from nodes (Slurm's ``--exclude``)
    can_exclude_nodes: bool = False
    #: node -> why, left out of new submissions (set by :meth:`exclude_nodes`)
    excluded_nodes: Mapping[str, str] = MappingProxyType({})

    def exclude_nodes(self, nodes: Mapping[str, str]) -> None:
        """From now on leave ``nodes`` (name -> why) out of new submissions; an empty mapping: none any more.

        Where the scheduler cannot be told (``can_exclude_nodes`` false: PBS, local) they are only remembered.
        """
        self.excluded_nodes = MappingProxyType(dict(nodes))

    def max_array_size(self) -> int | None:
        """Largest number of tasks in one array (None: no limit)."""
        return None

    def default_max_jobs(self) -> int | None:
        """A cap on our queued + running tasks when the config sets none."""
        return None

    @abstractmethod
    def submit(self, request: ArrayRequest) -> Submitted: ...

    @abstractmethod
    def queue(self, task_ids: list[str]) -> dict[str, QueueEntry]:
        """Which of ``task_ids`` are still queued or running, with their state (the scheduler's words translated)
        and reason; ONE scheduler query."""

    def submit_workers(self, request: WorkerRequest) -> Submitted:
        """Submit an array of warm workers (worker mode); executors that cannot say so."""
        raise DwfError(f"worker mode (--workers) is not available with the {self.name} executor")

    def outcome(self, spec: str, index: int, task_id: str | None, folder: str | None) -> Outcome | None:
        """How a task ended, or None when it left no trace of finishing."""
        result = read_result_file(spec, index)
        return Outcome(result=result) if result is not None else None

    def idle_poll(self) -> None:
        """A scheduler poll with none of our tasks in flight (per-part arrays: nothing to ask)."""

    def masters_changed(self) -> None:
        """New masters were built (warm workers copy them again); nothing to do for per-part arrays."""

    def gone_reasons(self, tasks: list[tuple[str, str | None]]) -> dict[str, str]:
        """For (task_id, folder) pairs of tasks that vanished without a result: why, where it can tell."""
        return {}

    def close(self) -> None:
        """Release what the executor holds (processes it must reap, connections)."""
