"""Which exposures go next (the four modes) and the queue of parts the streams take from.

``serial``       newest exposure first, one at a time (its K parts still travel on N streams)
``parallel``     every exposure as it becomes complete, oldest first, up to N exposures in flight
``batch``        bundles of ``nbundle`` exposures, newest first; the next bundle starts when the
                 previous one is delivered; every exposure is sent, none dropped
``end-of-night`` after reconciling with the receiver's listing: everything missing above
                 ``exp_min``, as in parallel

:class:`Flight` is what the packer, the streams and the reconciler share: the exposures in flight,
the part queue, the run's tallies, and the one lock over them.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..layout import manifest_name, part_tar_name
from .journal import ExposureRow

MODES = ("serial", "parallel", "batch", "end-of-night")


@dataclass(frozen=True)
class Policy:
    mode: str
    streams: int
    nbundle: int = 4
    exp_min: int = 0

    def select(self, candidates: list[ExposureRow], in_flight: int) -> list[ExposureRow]:
        """The exposures to start now, given those ready and how many are in flight."""
        if self.mode == "end-of-night":
            candidates = [c for c in candidates if c.expnum > self.exp_min]
        if not candidates:
            return []
        newest = sorted(candidates, key=lambda e: e.expnum, reverse=True)
        if self.mode == "serial":
            return newest[:1] if in_flight == 0 else []
        if self.mode == "batch":
            return newest[: self.nbundle] if in_flight == 0 else []
        oldest = sorted(candidates, key=lambda e: (e.t_complete or 0.0, e.expnum))
        return oldest[: max(0, self.streams - in_flight)]

    def priority(self, exp: ExposureRow, k: int) -> tuple:
        """Order of parts in the send queue (smaller first)."""
        if self.mode in ("serial", "batch"):
            return (-exp.expnum, k)
        return (exp.t_complete or 0.0, exp.expnum, k)


@dataclass(frozen=True)
class QueuedPart:
    expid: str
    k: int
    n: int
    tar: str
    manifest: str
    tar_bytes: int


class PartQueue:
    """A priority queue of parts waiting for a stream."""

    def __init__(self) -> None:
        self._heap: list[tuple[tuple, int, QueuedPart]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()

    def put(self, priority: tuple, part: QueuedPart) -> None:
        with self._cond:
            heapq.heappush(self._heap, (priority, next(self._seq), part))
            self._cond.notify()

    def get(self, timeout: float) -> QueuedPart | None:
        got = self.get_batch(timeout)
        return got[0] if got else None

    def get_batch(self, timeout: float, share: Callable[[int], int] | None = None) -> list[QueuedPart]:
        """The next parts in priority order (empty after ``timeout`` with nothing queued).

        ``share(queued)`` says how many of the ``queued`` parts to take (at least one); by default one.
        """
        with self._cond:
            if not self._heap:
                self._cond.wait(timeout)
            if not self._heap:
                return []
            n = max(1, min(len(self._heap), share(len(self._heap)) if share else 1))
            return [heapq.heappop(self._heap)[2] for _ in range(n)]

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)

    def wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()


@dataclass
class PushOutcome:
    delivered: int = 0
    failed: int = 0
    x_of_y: tuple[int, int] | None = None  # end-of-night: (delivered, expected)


class Flight:
    """Exposures in flight (being packed or sent), the queue of their parts and the run's tallies.

    ``lock`` (re-entrant) is held wherever the journal and these must change together, e.g. a
    stream confirming an exposure's last part while its packing thread is finishing.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.queue = PartQueue()
        self.lock = threading.RLock()
        self.expids: set[str] = set()
        self.outcome = PushOutcome()

    def __contains__(self, expid: str) -> bool:
        return expid in self.expids

    def __len__(self) -> int:
        return len(self.expids)

    def enqueue(self, exp: ExposureRow, k: int, n: int, size: int) -> None:
        qp = QueuedPart(exp.expid, k, n, part_tar_name(exp.expid, k, n), manifest_name(exp.expid, k, n), size)
        self.queue.put(self.policy.priority(exp, k), qp)
