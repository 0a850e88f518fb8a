"""The rows the state DB returns (:mod:`dwfhpc.statedb`): parts, tasks, submissions, node exclusions."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .states import PartState, TaskState

if TYPE_CHECKING:
    from .node.result import TaskResult

@dataclass(frozen=True)
class PartRow:
    stem: str
    expid: str
    k: int
    n: int
    instrument: str
    night: str
    kind: str
    filter: str
    field: str
    expnum: int
    tar: str
    manifest: str
    sha256: str
    bytes: int
    state: PartState
    reason: str | None
    t_inbox: float | None
    t_verified: float | None
    t_submitted: float | None
    t_done: float | None


@dataclass(frozen=True)
class TaskRow:
    part: str
    ccd: int
    expid: str
    night: str
    kind: str
    state: TaskState
    attempt: int
    mem_gb: float | None
    time_minutes: int | None
    prior_shift: tuple[float, float] | None
    submission: int | None
    idx: int | None
    job_id: str | None
    missing_since: float | None
    reason: str | None
    result: TaskResult | None  # the node's result (stored as its JSON)
    t_queued: float | None
    t_submitted: float | None
    t_started: float | None
    t_finished: float | None
    first_attempt: int = 1  # where this run's retry budget starts (a reprocess starts a new one)
    waiting: str | None = None  # a pending task held by the scheduler for more than a free slot (its reason)
    resource_retries: int = 0  # retries after failures on a node's resources since first_attempt (not counted)

    @property
    def attempts_used(self) -> int:
        """Attempts counted against ``ingest.max_attempts`` (failures on a node's resources are not)."""
        return self.attempt - self.first_attempt + 1 - self.resource_retries


@dataclass(frozen=True)
class NodeExclusion:
    """A node left out of new submissions: ``failures`` resource failures within the window (at least the
    threshold), the last at ``last`` with ``reason``; it returns to use at ``until`` unless more fail."""

    node: str
    failures: int
    first: float  # the oldest of those failures
    last: float
    until: float
    reason: str  # the last failure's reason
    part: str | None = None  # the last failure's task
    ccd: int | None = None

    def describe(self, threshold: int, window_minutes: float) -> str:
        """One line: why the node is excluded and until when (UTC)."""
        until = time.strftime("%H:%M:%S", time.gmtime(self.until))
        task = f"{self.part} CCD {self.ccd}: " if self.part else ""
        return (f"{self.failures} resource failures within {window_minutes:g} min (threshold {threshold}), "
                f"excluded until {until} UTC; last: {task}{self.reason}")


@dataclass(frozen=True)
class SubmissionRow:
    id: int
    part: str
    executor: str
    job_id: str | None
    name: str
    spec: str
    folder: str | None
    ntasks: int
    t_submitted: float



def _part_row(r: sqlite3.Row) -> PartRow:
    d = dict(r)
    d["state"] = PartState(d["state"])
    return PartRow(**d)


def _task_row(r: sqlite3.Row) -> TaskRow:
    d = dict(r)
    d["state"] = TaskState(d["state"])
    d["result"] = _stored_result(d["result"]) if d["result"] else None
    d["prior_shift"] = tuple(json.loads(d["prior_shift"])) if d["prior_shift"] else None
    return TaskRow(**d)


def _stored_result(text: str) -> TaskResult:
    """A stored result's JSON as a TaskResult; one that no longer validates (written by another dwfhpc, or
    edited by hand) is read as a failure that says so, so that the report and status still show the task."""
    from .node.result import ErrorKind, ResultError, TaskResult

    try:
        return TaskResult.from_json(text)
    except ResultError as exc:
        return TaskResult(error=f"stored result unreadable: {exc}", error_kind=ErrorKind.OTHER)
