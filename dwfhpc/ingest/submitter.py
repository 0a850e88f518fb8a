"""Queued tasks -> arrays: oldest part first, one spec and one array per part chunk, within the throttles.

A chunk is the queued CCDs of one part that share an attempt and its resources, cut to the free
slots of ``--max-jobs`` and to the cluster's MaxArraySize. Its spec
``specs/<stem>.a<attempt>.c<first CCD>.json`` lists exactly its CCDs, so task ``i`` of the array
calibrates ``ccds[i]``.

Before submitting, the nodes excluded for repeated resource failures (``ingest.node_failures_exclude``
within ``ingest.node_failure_window_minutes``, from the state DB's ``node_failures``) are handed to the
executor (:meth:`Submitter.update_exclusions`): an exclusion and its expiry are logged once each.
"""

from __future__ import annotations

import logging
import time
from itertools import groupby
from pathlib import Path

from ..config import SiteSettings
from ..errors import DwfError
from ..layout import JobFiles
from ..node import TaskSpec
from ..parts import read_manifest
from ..scheduler import job_name
from ..statedb import NodeExclusion, PartRow, StateDB, TaskRow
from ..states import TASK_ACTIVE, TaskState
from .executors import ArrayExecutor, ArrayRequest
from .masters import UsableMasters
from .throttle import Throttle

log = logging.getLogger(__name__)


def part_job_name(part: PartRow) -> str:
    return job_name(part.expid, f"p{part.k}")


def spec_path(specs: Path, part: str, attempt: int, first_ccd: int) -> Path:
    """The spec of a part's attempt under ``specs`` (:meth:`dwfhpc.layout.JobFiles.spec`)."""
    return Path(specs) / JobFiles.spec_name(part, attempt, first_ccd)


def chunks(ccds: list[int], size: int | None) -> list[list[int]]:
    if not size:
        return [ccds]
    return [ccds[i:i + size] for i in range(0, len(ccds), size)]


class Submitter:
    def __init__(self, site: SiteSettings, db: StateDB, executor: ArrayExecutor, throttle: Throttle):
        self.site, self.db, self.executor, self.throttle = site, db, executor, throttle
        self.files = JobFiles.for_site(site)
        self.specs = self.files.specs
        self.max_array = executor.max_array_size()
        self._manifests: dict[str, object] = {}
        self._early_nights: set[str] = set()  # nights whose science was sent before their masters (said once)
        self.excluded: dict[str, NodeExclusion] = {}  # nodes left out of submissions now (update_exclusions)

    def update_exclusions(self, now: float | None = None) -> dict[str, NodeExclusion]:
        """The nodes to leave out now (repeated resource failures within the window), handed to the executor
        when they change; a node excluded, and one back in use, is logged once (and so an event)."""
        ing = self.site.ingest
        now = now or time.time()
        window = ing.node_failure_window_minutes
        current = {e.node: e for e in self.db.node_exclusions(now, ing.node_failures_exclude, window * 60.0)}
        added, gone = sorted(current.keys() - self.excluded.keys()), sorted(self.excluded.keys() - current.keys())
        for node in added:
            e = current[node]
            how = ("new submissions go elsewhere" if self.executor.can_exclude_nodes else
                   f"not applied: the {self.executor.name} executor cannot exclude nodes (Slurm only)")
            log.warning("node %s excluded: %s; %s", node, e.describe(ing.node_failures_exclude, window), how,
                        extra={"part": e.part})
        for node in gone:
            log.info("node %s back in use: its exclusion expired (fewer than %d resource failures within %g min)",
                     node, ing.node_failures_exclude, window, extra={"part": None})
        if added or gone:
            self.executor.exclude_nodes({n: e.describe(ing.node_failures_exclude, window) for n, e in current.items()})
        self.excluded = current
        return current

    def make_spec(self, part: PartRow, tasks: list[TaskRow]) -> Path:
        """Write the spec for these tasks of one part (same attempt)."""
        manifest = self._manifests.get(part.stem) or read_manifest(part.manifest)
        self._manifests[part.stem] = manifest
        ccds = [t.ccd for t in tasks]
        shifts = {t.ccd: t.prior_shift for t in tasks if t.prior_shift}
        spec = TaskSpec.from_site(self.site, part.manifest, part.tar, manifest=manifest, ccds=ccds,
                                  attempt=tasks[0].attempt, prior_shifts=shifts,
                                  require_masters=self.site.node.require_masters and part.kind == "science")
        path = self.files.spec(part.stem, tasks[0].attempt, ccds[0])
        for i in range(len(ccds)):  # results of an earlier run of the same spec name are not this run's
            self.files.result(path, i).unlink(missing_ok=True)
        return spec.write(path)

    def submit_ready(self, blocked_nights: set[str] = frozenset(), now: float | None = None) -> int:
        """Submit what the throttles allow; returns the number of tasks submitted.

        A science CCD of a night in ``blocked_nights`` (its masters are not ready) waits only when it has no
        usable masters at all: with an earlier night's (``calibration.masters_max_age_days``) it goes now.
        """
        now = now or time.time()
        self.update_exclusions(now)
        cal = self.site.calibration
        usable = UsableMasters(self.db, self.site.path(cal.masters), cal.masters_max_age_days)
        queued, early = [], set()
        for t in self.db.tasks(TaskState.QUEUED):
            if (t.t_queued or 0.0) > max(now, time.time()):  # a retry waits out its delay
                continue
            if t.kind == "science" and t.night in blocked_nights:
                if not usable(t):
                    continue  # waits for tonight's masters
                early.add(t.night)
            queued.append(t)
        if not queued:
            return 0
        for night in sorted(early - self._early_nights):
            self._early_nights.add(night)
            log.info("night %s: tonight's masters not ready; science goes on with the masters there are (an earlier "
                     "night's within %d days where tonight's are missing)", night, cal.masters_max_age_days,
                     extra={"part": None})
        slots = self.throttle.slots(self.db.count_tasks(*TASK_ACTIVE))
        parts = {stem: part for stem in {t.part for t in queued} if (part := self.db.part(stem)) is not None}
        submitted = 0
        for stem in sorted(parts, key=lambda s: (parts[s].t_inbox or 0.0, s)):  # oldest arrival first
            if slots is not None and slots <= 0:
                break
            part = parts[stem]
            if part.t_submitted is None and not self.throttle.part_may_start(self.db.last_part_submission_time(), now):
                break  # oldest first: a younger part does not overtake a waiting one
            mine = [t for t in queued if t.part == stem]
            for _, group in groupby(sorted(mine, key=lambda t: (t.attempt, t.mem_gb, t.time_minutes, t.ccd)),
                                    key=lambda t: (t.attempt, t.mem_gb, t.time_minutes)):
                group = list(group)
                if slots is not None:
                    group = group[:slots]
                for chunk in chunks([t.ccd for t in group], self.max_array):
                    tasks = [t for t in group if t.ccd in chunk]
                    submitted += self._submit(part, tasks, now)
                    if slots is not None:
                        slots -= len(tasks)
                if slots is not None and slots <= 0:
                    break
        return submitted

    def _submit(self, part: PartRow, tasks: list[TaskRow], now: float) -> int:
        path = self.make_spec(part, tasks)
        request = ArrayRequest(part=part.stem, name=part_job_name(part), spec=path, ntasks=len(tasks),
                               mem_gb=tasks[0].mem_gb or self.site.scheduler.mem_gb,
                               time_minutes=tasks[0].time_minutes or self.site.scheduler.time_minutes)
        try:
            sub = self.executor.submit(request)
        except DwfError as exc:  # the scheduler refused: the tasks stay queued, tried again next poll
            log.error("%s: submission failed (will retry): %s", part.stem, exc, extra={"part": part.stem})
            return 0
        except Exception as exc:  # noqa: BLE001 - anything else from a scheduler library must not stop the night
            log.error("%s: submission failed (will retry): %s: %s", part.stem, type(exc).__name__, exc,
                      extra={"part": part.stem}, exc_info=True)
            return 0
        self.db.add_submission(part.stem, self.executor.name, sub.job_id, request.name, str(path), sub.folder,
                               [t.ccd for t in tasks], sub.task_ids, now=time.time())
        attempt = f" (attempt {tasks[0].attempt})" if tasks[0].attempt > 1 else ""
        if self.executor.submits_as == "tickets":
            log.info("%s: %d CCD(s) queued for the warm workers%s", part.stem, len(tasks), attempt,
                     extra={"part": part.stem})
        else:
            log.info("%s: array of %d submitted%s%s", part.stem, len(tasks), attempt,
                     f" as job {sub.job_id}" if sub.job_id else "", extra={"part": part.stem})
        return len(tasks)
