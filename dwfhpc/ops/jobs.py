"""Our array tasks in the scheduler's queue, by state (the seed's getjobs), in one query."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from ..scheduler import JOB_PREFIX, QueuedTask, Scheduler, site_scheduler

if TYPE_CHECKING:
    from ..config import SiteSettings

__all__ = ["JOB_PREFIX", "QueuedTask", "by_state", "queued_tasks", "site_scheduler"]


def queued_tasks(prefix: str = JOB_PREFIX, scheduler: Scheduler | None = None, *,
                 site: SiteSettings | None = None) -> list[QueuedTask]:
    """Every task (array tasks expanded) of jobs whose name starts with ``prefix``; one queue query, to
    ``scheduler``, else the site's (:func:`site_scheduler`)."""
    return (scheduler or site_scheduler(site)).tasks(prefix=prefix)


def by_state(tasks: list[QueuedTask]) -> dict[str, int]:
    return dict(Counter(t.display_state for t in tasks))
