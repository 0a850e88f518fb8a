"""Every state the state DB and the push journal store, as :class:`enum.StrEnum` s.

A member *is* its string (``TaskState.DONE == "done"``, ``json.dumps`` and SQLite store ``"done"``),
so the databases keep their values and code that still compares with bare strings keeps working.
Each enum has its ``*_FINAL`` (nothing more happens to it) and ``*_ACTIVE`` (in flight) frozensets,
as Parsl's ``JobState`` / ``TERMINAL_STATES``.

Cluster side (``dwfhpc.state``):

* :class:`PartState`: a part received by ingest, derived from its tasks (or ``quarantined``).
* :class:`TaskState`: one CCD of a part.
* :class:`ExposureState`: an exposure as ``dwfhpc status`` summarises it from its tasks.

Sender side (``dwfhpc.push.journal``): :class:`FileState`, :class:`PushExposureState`,
:class:`SentPartState`.
"""

from __future__ import annotations

from collections.abc import Iterable
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


__all__ = ["PartState", "TaskState", "ExposureState", "FileState", "PushExposureState", "SentPartState",
           "PART_FINAL", "PART_ACTIVE", "TASK_FINAL", "TASK_ACTIVE", "EXPOSURE_FINAL", "EXPOSURE_ACTIVE",
           "FILE_FINAL", "FILE_ACTIVE", "PUSH_EXPOSURE_FINAL", "PUSH_EXPOSURE_ACTIVE", "SENT_PART_FINAL",
           "SENT_PART_ACTIVE", "part_state_from_tasks", "exposure_state_from_tasks"]
