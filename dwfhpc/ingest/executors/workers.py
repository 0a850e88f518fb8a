"""Worker mode: warm workers behind the same executor interface as one-array-per-part.

``submit`` of a part's chunk puts one ticket per CCD into the shared-FS
:class:`~dwfhpc.workers.WorkQueue` (no scheduler call: a verified part's CCDs are claimable at
once); the workers themselves are the tasks of worker arrays submitted through the inner
executor (submitit local or Slurm). ``queue`` makes the ONE scheduler query of the poll, for the
workers, and answers for the tickets from it: a waiting ticket is ``PENDING``, one claimed by a
live worker ``RUNNING``; one claimed by a worker that left the queue is answered for by nobody,
so the collector finds its result file or, lacking one, declares it lost and retries it (another
worker takes it). The same poll keeps the pool full and rolls it: a worker within
``replace_minutes`` of its walltime gets a successor before it stops taking CCDs
(``stop_minutes`` before the end), so the night never has zero workers. ``close`` drains them:
each finishes its current CCD and exits.

Excluded nodes (:meth:`WorkerPoolExecutor.exclude_nodes`: repeated resource failures there) are passed
to the inner executor, so new workers are submitted with them excluded (Slurm only), and a worker whose
heartbeat names an excluded node is asked to drain (``stop/<worker>``: it finishes its current CCD and
exits) with its successor submitted at once. Where the inner executor cannot exclude nodes (PBS, local) no
worker is drained: its successor could land on the same node again.

The pool (worker task ids, when each was submitted) is kept in ``<queue>/pool.json``, so a
restarted ingest re-attaches to the workers it started. Before each submission the workers' settings
(the site's node scratch, the stop margin) are written to ``<queue>/settings.json``
(:class:`~dwfhpc.workers.settings.WorkerSettings`), where every worker reads them however it was launched.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ...atomic import atomic_write_text
from ...errors import DwfError
from ...layout import WorkerQueueFiles
from ...node.result import node_name
from ...node.spec import TaskSpec
from ...scheduler import job_name
from ...states import QueueEntry, SchedulerState, WorkerState
from ...workers import WorkQueue
from ...workers.queue import ALL
from ...workers.settings import WorkerSettings
from .base import ArrayExecutor, ArrayRequest, Submitted, WorkerRequest

log = logging.getLogger(__name__)

@dataclass
class PoolMember:
    task_id: str  # the scheduler's id of this worker's task
    t_submitted: float
    replaced: bool = False  # a successor was submitted for it


class WorkerPoolExecutor(ArrayExecutor):
    """Tickets for a pool of ``n`` warm workers started through ``inner`` (see the module docstring)."""

    def __init__(self, inner: ArrayExecutor, queue_root: str | Path, *, n: int, mem_gb: float, time_minutes: int,
                 replace_minutes: float, stop_minutes: float, scratch_vars: list[str], scratch_fallback: str,
                 drain_timeout: float = 120.0):
        if n < 1:
            raise DwfError("worker mode needs at least one worker")
        self.inner, self.n = inner, n
        self.name = f"{inner.name}+workers"
        self.submits_as = "tickets"
        self.queue_root = Path(queue_root)
        self.work = WorkQueue(self.queue_root)
        self.mem_gb, self.time_minutes = mem_gb, time_minutes
        self.replace_minutes, self.stop_minutes = replace_minutes, stop_minutes
        self.scratch_vars, self.scratch_fallback = list(scratch_vars), scratch_fallback
        self.drain_timeout = drain_timeout
        self.pool: list[PoolMember] = self._load()
        self._orphans: dict[str, str] = {}  # ticket name -> task id of the worker that died holding it
        self._drained: set[str] = set()  # workers asked to drain because their node is excluded
        self.started_workers = 0

    @property
    def can_exclude_nodes(self) -> bool:  # new workers go where the inner executor's submissions go
        return self.inner.can_exclude_nodes

    # ------------------------------------------------------------------ pool file
    def _pool_file(self) -> Path:
        return WorkerQueueFiles(self.queue_root).pool

    def _load(self) -> list[PoolMember]:
        try:
            return [PoolMember(**m) for m in json.loads(self._pool_file().read_text())]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError) as exc:
            log.warning("worker pool file %s unreadable (%s): starting a new pool", self._pool_file(), exc)
            return []

    def _save(self) -> None:
        atomic_write_text(self._pool_file(), json.dumps([asdict(m) for m in self.pool], indent=1))

    # ------------------------------------------------------------------ interface
    def submit(self, request: ArrayRequest) -> Submitted:
        """One ticket per CCD of the spec; the pool is started on the first one."""
        if not self.pool:
            self._start(self.n)
        spec = TaskSpec.read(request.spec)
        tickets = [self.work.put(request.part, ccd, request.spec, i, spec.attempt) for i, ccd in enumerate(spec.ccds)]
        return Submitted(job_id=None, task_ids=[t.name for t in tickets], folder=None)

    def queue(self, task_ids: list[str]) -> dict[str, QueueEntry]:
        alive = self.inner.queue([m.task_id for m in self.pool])  # the poll's one scheduler query
        self._maintain(alive)
        live_names = {f"w{tid}" for tid in alive}
        states = {t.name: QueueEntry(SchedulerState.PENDING) for t in self.work.waiting()}
        for worker, tickets in self.work.claims().items():
            for t in tickets:
                if worker in live_names:
                    states[t.name] = QueueEntry(SchedulerState.RUNNING)
        wanted = set(task_ids)
        return {name: state for name, state in states.items() if name in wanted}

    def gone_reasons(self, tasks: list[tuple[str, str | None]]) -> dict[str, str]:
        dead = {self._orphans[tid] for tid, _ in tasks if tid in self._orphans}
        why = self.inner.gone_reasons([(w, None) for w in dead]) if dead else {}
        out = {}
        for tid, _ in tasks:
            worker = self._orphans.get(tid)
            if worker:
                out[tid] = f"worker {worker} ended ({why.get(worker, 'reason unknown')})"
        return out

    def idle_poll(self) -> None:
        """No CCD in flight: still one query for the workers, so the pool is kept full and rolled."""
        if self.pool:
            self.queue([])

    def masters_changed(self) -> None:
        self.work.bump_masters()

    def exclude_nodes(self, nodes: Mapping[str, str]) -> None:
        """New workers avoid ``nodes`` (through the inner executor); the pool's workers on them drain."""
        super().exclude_nodes(nodes)
        self.inner.exclude_nodes(nodes)
        if self.pool and self.can_exclude_nodes:  # elsewhere the successor could land on the same node: no churn
            self._drain_excluded()

    def close(self) -> None:
        """Drain the pool: every worker finishes its current CCD and exits (bounded wait)."""
        if self.pool:
            self.work.request_drain(ALL)
            deadline = time.monotonic() + self.drain_timeout
            while time.monotonic() < deadline:
                if not self.inner.queue([m.task_id for m in self.pool]):
                    break
                time.sleep(0.5)
            else:
                log.warning("workers still running %.0f s after the drain request: %s", self.drain_timeout,
                            ", ".join(m.task_id for m in self.pool))
            self.pool = []
            self._save()
        self.inner.close()

    # ------------------------------------------------------------------ pool upkeep
    def settings(self) -> WorkerSettings:
        """What every worker of this pool reads from ``<queue>/settings.json``."""
        return WorkerSettings(scratch_vars=list(self.scratch_vars), scratch_fallback=self.scratch_fallback,
                              stop_minutes=float(self.stop_minutes))

    def _start(self, count: int) -> None:
        """Write the workers' settings file, then submit ``count`` workers as one array (a refusal, or a
        settings file that cannot be written, is logged; the next poll tries again)."""
        self.work.cancel_drain(ALL)
        try:
            self.settings().write(self.queue_root)
        except OSError as exc:
            log.error("worker settings %s not written, no worker submitted (will retry): %s",
                      WorkerSettings.path(self.queue_root), exc)
            return
        request = WorkerRequest(name=job_name("workers"), queue_root=self.queue_root, n=count, mem_gb=self.mem_gb,
                                time_minutes=self.time_minutes, stop_minutes=self.stop_minutes,
                                scratch_vars=self.scratch_vars, scratch_fallback=self.scratch_fallback)
        try:
            sub = self.inner.submit_workers(request)
        except DwfError as exc:
            log.error("worker array not submitted (will retry): %s", exc)
            return
        except Exception as exc:  # noqa: BLE001 - anything else from a scheduler library must not stop the night
            log.error("worker array not submitted (will retry): %s: %s", type(exc).__name__, exc, exc_info=True)
            return
        now = time.time()
        self.pool += [PoolMember(task_id=tid, t_submitted=now) for tid in sub.task_ids]
        self.started_workers += count
        self._save()
        log.info("%d worker(s) submitted%s", count, f" as job {sub.job_id}" if sub.job_id else "")

    def _started(self, member: PoolMember) -> float:
        """When the worker's walltime started counting: its first heartbeat, else its submission."""
        beat = self._beats().get(f"w{member.task_id}")
        return beat.started if beat else member.t_submitted

    def _beats(self) -> dict:
        return {b.worker: b for b in self.work.beats()}

    def _maintain(self, alive: dict[str, str]) -> None:
        """Forget dead workers (their claims become orphans), roll those near walltime, top the pool up."""
        changed = False
        claims = self.work.claims()
        for member in [m for m in self.pool if m.task_id not in alive]:
            self.pool.remove(member)
            changed = True
            held = claims.get(f"w{member.task_id}", [])
            for ticket in held:
                self._orphans[ticket.name] = member.task_id
                self.work.withdraw(ticket, f"w{member.task_id}")
            log.warning("worker %s left the queue%s", member.task_id,
                        f" holding {', '.join(f'{t.part} CCD {t.ccd}' for t in held)}" if held else "")
        now = time.time()
        for member in self.pool:
            end = self._started(member) + self.time_minutes * 60.0
            if not member.replaced and now >= end - self.replace_minutes * 60.0:
                member.replaced = True
                changed = True
                log.info("worker %s: walltime ends in %.0f s, starting its successor", member.task_id, end - now)
        if self.excluded_nodes and self.can_exclude_nodes and self._drain_excluded():
            changed = True
        current = sum(1 for m in self.pool if not m.replaced)
        if changed:
            self._save()
        if current < self.n:
            self._start(self.n - current)

    def _drain_excluded(self) -> bool:
        """Ask each live worker on an excluded node (its heartbeat's host) to drain, its successor submitted first
        (excluding the node). A worker is asked only once the scheduler has taken the exclusion: should it refuse
        it (every node excluded) the workers stay, and the pool is not left empty for a moment. True if one was
        asked."""
        beats = self._beats()
        doomed: list[tuple[PoolMember, str, str]] = []
        for member in self.pool:
            name = f"w{member.task_id}"
            beat = beats.get(name)
            if beat is None or beat.state == WorkerState.EXITED or name in self._drained:
                continue
            node = node_name(beat.host)
            if node in self.excluded_nodes:
                doomed.append((member, name, node))
        if not doomed:
            return False
        for member, _, _ in doomed:
            member.replaced = True
        current, size = sum(1 for m in self.pool if not m.replaced), len(self.pool)
        if current < self.n:
            self._start(self.n - current)  # the successors, submitted with the exclusion
        # no successor (the submission failed), or the scheduler would not take the exclusion: the workers stay
        if (current < self.n and len(self.pool) == size) or not self.can_exclude_nodes:
            for member, _, _ in doomed:
                member.replaced = False
            return False
        for member, name, node in doomed:
            self.work.request_drain(name)
            self._drained.add(name)
            log.warning("worker %s runs on excluded node %s (%s): asked to drain; its successor is submitted "
                        "elsewhere", member.task_id, node, self.excluded_nodes[node])
        self._save()
        return True
