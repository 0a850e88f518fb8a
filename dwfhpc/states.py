"""Every state the state DB and the push journal store, as :class:`enum.StrEnum` s.

A member *is* its string (``TaskState.DONE == "done"``, ``json.dumps`` and SQLite store ``"done"``),
so the databases keep their values and code that still compares with bare strings keeps working.
Each enum has its ``*_FINAL`` (nothing more happens to it) and ``*_ACTIVE`` (in flight) frozensets,
as Parsl's ``JobState`` / ``TERMINAL_STATES``.

Cluster side (``dwfhpc.statedb``):

* :class:`PartState`: a part received by ingest, derived from its tasks (or ``quarantined``).
* :class:`TaskState`: one CCD of a part.
* :class:`ExposureState`: an exposure as ``dwfhpc status`` summarises it from its tasks.

Sender side (``dwfhpc.push.journal``): :class:`FileState`, :class:`PushExposureState`,
:class:`SentPartState`; a send stream's :class:`StreamState` (the live view).

Schedulers (``dwfhpc.scheduler``): :class:`SchedulerState` and :class:`QueueEntry`, what a task in a
batch queue is. Each scheduler translates its own words into them (Slurm's ``PENDING``,
``CONFIGURING``, ..., PBS's ``Q``, ``R``, ``H``, ...), as Parsl's providers fill ``JobStatus``.

Display: :data:`TASK_DISPLAY`, the one :class:`DisplayState` word a report shows for a task state.

Code outside this module (and the scheduler translators, for the scheduler's own words) names
states through these enums, never as bare strings: ``tests/test_states_vocabulary.py`` checks it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class PartState(StrEnum):
    QUEUED = "queued"  # verified, no task submitted yet
    ACTIVE = "active"  # some task submitted, running or retried
    DONE = "done"  # every task done
    FAILED = "failed"  # every task final, not all done
    QUARANTINED = "quarantined"  # failed verification in the inbox


class TaskState(StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"  # in the scheduler's queue
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # kept failing (reason says why)
    LOST = "lost"  # kept leaving the queue without a result


class ExposureState(StrEnum):
    DONE = "done"  # every CCD done
    FAILED = "failed"  # every CCD final, not all done
    IN_PROGRESS = "in progress"


class FileState(StrEnum):
    """A raw file the push watcher saw."""

    SEEN = "seen"
    COMPLETE = "complete"
    FAILED = "failed"


class PushExposureState(StrEnum):
    """An exposure in the push journal."""

    SEEN = "seen"  # an HSC visit still waiting for CCD files
    COMPLETE = "complete"  # every raw file complete: ready to pack
    PACKING = "packing"
    PACKED = "packed"
    DELIVERED = "delivered"  # every part confirmed in the receiver's inbox
    FAILED = "failed"


class SentPartState(StrEnum):
    """A part in the push journal."""

    PACKED = "packed"
    SENDING = "sending"
    CONFIRMED = "confirmed"
    FAILED = "failed"


class StreamState(StrEnum):
    """What one send stream of ``dwfhpc push`` is doing (the live view's ``state`` column)."""

    IDLE = "idle"
    SENDING = "sending"


class WorkerState(StrEnum):
    """A warm worker's heartbeat state (``<queue>/workers/<worker>.json``)."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "draining"
    EXITED = "exited"


#: a live worker that could take a CCD now
WORKER_FREE = frozenset({WorkerState.IDLE, WorkerState.STARTING})


class SchedulerState(StrEnum):
    """A task in a batch scheduler's queue, in dwfhpc's words (Parsl's ``JobState``, for queued tasks only).

    The values are Slurm's names, so they print as ``dwfhpc jobs`` always showed them; a task that
    left the queue is not in it at all (the collector then looks for its result).
    """

    PENDING = "PENDING"  # waiting (for a slot, or for what the entry's reason says)
    HELD = "HELD"  # held by the user or an administrator
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"  # ending; still holds its slot
    SUSPENDED = "SUSPENDED"
    UNKNOWN = "UNKNOWN"  # a word the scheduler's translator does not know: counts as waiting


#: scheduler states of a task that runs (the collector marks it running; the rest is waiting)
SCHEDULER_RUNNING = frozenset({SchedulerState.RUNNING, SchedulerState.COMPLETING})


@dataclass(frozen=True)
class QueueEntry:
    """One task in the scheduler's queue: its :class:`SchedulerState` and what the scheduler says it waits
    for (Slurm's ``%r``: ``Priority``, ``BeginTime``, ``JobHeldUser``, ...; None where it says nothing).

    Each scheduler fills it by translating its own words (:mod:`dwfhpc.scheduler`).
    """

    state: SchedulerState
    reason: str | None = None

    @property
    def running(self) -> bool:
        return self.state in SCHEDULER_RUNNING

    def __str__(self) -> str:
        return str(self.state)


PART_FINAL = frozenset({PartState.DONE, PartState.FAILED, PartState.QUARANTINED})
PART_ACTIVE = frozenset({PartState.ACTIVE})
TASK_FINAL = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.LOST})
TASK_ACTIVE = frozenset({TaskState.SUBMITTED, TaskState.RUNNING})
EXPOSURE_FINAL = frozenset({ExposureState.DONE, ExposureState.FAILED})
EXPOSURE_ACTIVE = frozenset({ExposureState.IN_PROGRESS})
FILE_FINAL = frozenset({FileState.COMPLETE, FileState.FAILED})
FILE_ACTIVE = frozenset({FileState.SEEN})
PUSH_EXPOSURE_FINAL = frozenset({PushExposureState.DELIVERED, PushExposureState.FAILED})
PUSH_EXPOSURE_ACTIVE = frozenset({PushExposureState.PACKING, PushExposureState.PACKED})
SENT_PART_FINAL = frozenset({SentPartState.CONFIRMED, SentPartState.FAILED})
SENT_PART_ACTIVE = frozenset({SentPartState.SENDING})


class DisplayState(StrEnum):
    """The word a report shows for a CCD (:data:`TASK_DISPLAY` of its task state, or missing: no task)."""

    QUEUED = "queued"  # queued, or submitted and waiting in the scheduler's queue
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    LOST = "lost"
    MISSING = "missing"  # no task (the focal-plane map's CCDs no exposure has)


#: the ONE map from a task state to the word shown for it (the night report, its counts and its map)
TASK_DISPLAY: dict[TaskState, DisplayState] = {
    TaskState.QUEUED: DisplayState.QUEUED, TaskState.SUBMITTED: DisplayState.QUEUED,
    TaskState.RUNNING: DisplayState.RUNNING, TaskState.DONE: DisplayState.DONE,
    TaskState.FAILED: DisplayState.FAILED, TaskState.LOST: DisplayState.LOST}


def task_display(state: str) -> DisplayState:
    """:data:`TASK_DISPLAY` of ``state``; ValueError for a state :class:`TaskState` does not have."""
    try:
        return TASK_DISPLAY[TaskState(state)]
    except ValueError:
        raise ValueError(f"unknown task state {state!r}") from None


def part_state_from_tasks(states: Iterable[str]) -> PartState:
    """A part's state from its tasks' states: done (all done), failed (all final), queued (all queued), else active."""
    states = [TaskState(s) for s in states]
    if states and all(s is TaskState.DONE for s in states):
        return PartState.DONE
    if states and all(s in TASK_FINAL for s in states):
        return PartState.FAILED
    if all(s is TaskState.QUEUED for s in states):  # also no tasks at all, as before
        return PartState.QUEUED
    return PartState.ACTIVE


def exposure_state_from_tasks(states: Iterable[str]) -> ExposureState:
    """An exposure's state from its CCDs' task states (as ``dwfhpc status`` counts them): done, failed, else in progress."""
    part = part_state_from_tasks(states)
    return {PartState.DONE: ExposureState.DONE, PartState.FAILED: ExposureState.FAILED}.get(part, ExposureState.IN_PROGRESS)


__all__ = [
    "EXPOSURE_ACTIVE",
    "EXPOSURE_FINAL",
    "FILE_ACTIVE",
    "FILE_FINAL",
    "PART_ACTIVE",
    "PART_FINAL",
    "PUSH_EXPOSURE_ACTIVE",
    "PUSH_EXPOSURE_FINAL",
    "SCHEDULER_RUNNING",
    "SENT_PART_ACTIVE",
    "SENT_PART_FINAL",
    "TASK_ACTIVE",
    "TASK_DISPLAY",
    "TASK_FINAL",
    "DisplayState",
    "ExposureState",
    "FileState",
    "PartState",
    "PushExposureState",
    "QueueEntry",
    "SchedulerState",
    "SentPartState",
    "StreamState",
    "TaskState",
    "exposure_state_from_tasks",
    "part_state_from_tasks",
    "task_display",
]
