"""One interface for the schedulers ingest submits to: an array of node tasks per part chunk.

An executor submits an array (task ``i`` runs ``dwfhpc node run SPEC --index i``), answers which of
our tasks are still queued or running in **one** scheduler query, and says how a task ended: its
result (the node leaves ``<spec stem>.result-<i>.json`` beside the spec, whoever launched it), a
Python error caught by submitit, or nothing (the task vanished: cancelled, killed, timed out).
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from ...node import result_path


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
class Submitted:
    job_id: str | None  # the array's id (None where the scheduler has none, e.g. local processes)
    task_ids: list[str]  # one per index
    folder: str | None  # where the scheduler's logs of this array are


@dataclass(frozen=True)
class Outcome:
    """How a finished task ended: ``result`` from the node, or ``error`` when it raised before giving one."""

    result: dict | None = None
    error: str | None = None


#: why a task left the queue without a result, from the scheduler's own words in its log
_GONE_PATTERNS = (
    ("timeout", re.compile(r"DUE TO TIME LIMIT|TIMEOUT|time limit", re.I)),
    ("oom", re.compile(r"oom-kill|out of memory|OUT_OF_MEMORY|MemoryError|Killed", re.I)),
    ("cancelled", re.compile(r"CANCELLED", re.I)),
    ("node failure", re.compile(r"NODE_FAIL|DUE TO NODE FAILURE", re.I)),
)


def reason_from_text(text: str) -> str | None:
    for reason, pattern in _GONE_PATTERNS:
        if pattern.search(text):
            return reason
    return None


def read_result_file(spec: str | Path, index: int) -> dict | None:
    """The node's result for task ``index`` of ``spec``, or None when there is none (yet)."""
    path = result_path(spec, index)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return None  # being written over NFS, or damaged: the next poll looks again


class ArrayExecutor(ABC):
    """A scheduler behind one interface (submitit local / Slurm, PBS via templates)."""

    name: str = "?"

    def max_array_size(self) -> int | None:
        """Largest number of tasks in one array (None: no limit)."""
        return None

    def default_max_jobs(self) -> int | None:
        """A cap on our queued + running tasks when the config sets none."""
        return None

    @abstractmethod
    def submit(self, request: ArrayRequest) -> Submitted: ...

    @abstractmethod
    def queue(self, task_ids: list[str]) -> dict[str, str]:
        """Which of ``task_ids`` are still queued or running, with their state; ONE scheduler query."""

    def outcome(self, spec: str, index: int, task_id: str | None, folder: str | None) -> Outcome | None:
        """How a task ended, or None when it left no trace of finishing."""
        result = read_result_file(spec, index)
        return Outcome(result=result) if result is not None else None

    def gone_reasons(self, tasks: list[tuple[str, str | None]]) -> dict[str, str]:
        """For (task_id, folder) pairs of tasks that vanished without a result: why, where it can tell."""
        return {}

    def close(self) -> None:
        """Release what the executor holds (processes it must reap, connections)."""
