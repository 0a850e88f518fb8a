"""Our array tasks in the scheduler's queue, by state (the seed's getjobs), in one query."""

from __future__ import annotations

from collections import Counter

from ..scheduler import JOB_PREFIX, QueuedTask, Scheduler, Slurm

__all__ = ["JOB_PREFIX", "QueuedTask", "by_state", "queued_tasks"]


def queued_tasks(prefix: str = JOB_PREFIX, scheduler: Scheduler | None = None) -> list[QueuedTask]:
    """Every task (array tasks expanded) of jobs whose name starts with ``prefix``; one queue query (Slurm's squeue
    unless another scheduler is given)."""
    return (scheduler or Slurm()).tasks(prefix=prefix)


def by_state(tasks: list[QueuedTask]) -> dict[str, int]:
    return dict(Counter(t.display_state for t in tasks))
