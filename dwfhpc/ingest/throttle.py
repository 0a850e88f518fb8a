"""The two throttles of the HSC run: at most N of our tasks queued + running, at most R parts per minute."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Throttle:
    max_jobs: int | None = None  # tasks queued + running
    rate: float | None = None  # new parts started per minute

    def slots(self, active_tasks: int) -> int | None:
        """How many more tasks may be submitted now (None: no limit)."""
        return None if self.max_jobs is None else max(0, self.max_jobs - active_tasks)

    def part_may_start(self, last_start: float | None, now: float) -> bool:
        """A part not yet started may start when the previous one started at least 60/R s ago."""
        return self.rate is None or last_start is None or now - last_start >= 60.0 / self.rate - 1e-6
