"""PBS Pro (``-J``) and Torque (``-t``) arrays from ``pbs_templates/calibrate-array.pbs``, submitted with ``qsub``.

Each task runs ``dwfhpc node run SPEC`` (index from $PBS_ARRAY_INDEX / $PBS_ARRAYID), which leaves
its result beside the spec: that file is the whole result channel. ``qstat -t`` once per poll
lists our subjobs still queued or running (:class:`dwfhpc.scheduler.Pbs` / ``Torque``).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ...config import SiteSettings
from ...scheduler import Pbs, scheduler_for
from ...atomic import atomic_write_text
from ...templates import render, write_array_script
from ...states import QueueEntry
from .base import ArrayExecutor, ArrayRequest, Submitted, WorkerRequest


class PbsArrayExecutor(ArrayExecutor):
    name = "pbs"

    def __init__(self, site: SiteSettings, jobs_dir: Path, *, pbs: Pbs | None = None):
        self.site = site
        self.jobs_dir = Path(jobs_dir)
        self.pbs = pbs or scheduler_for("pbs", site.scheduler)  # a pbs executor: PBS whatever ingest.executor says

    @property
    def queries(self) -> int:
        return self.pbs.queries

    def max_array_size(self) -> int | None:
        return self.pbs.max_array_size()

    def script_for(self, request: ArrayRequest) -> Path:
        """The array script with this attempt's memory and time (the site's settings are left as they are)."""
        res = self.pbs.resources(mem_gb=request.mem_gb, time_minutes=request.time_minutes)
        out = self.jobs_dir / f"{request.spec.stem}{self.pbs.script_suffix}"
        return write_array_script(self.site, "pbs", request.spec, request.ntasks, request.name, out,
                                  self.jobs_dir / "logs", resources=res)

    def submit(self, request: ArrayRequest) -> Submitted:
        array_id = self.pbs.submit(self.script_for(request))
        return Submitted(job_id=array_id, task_ids=self.pbs.array_task_ids(array_id, request.ntasks),
                         folder=str(self.jobs_dir))

    def worker_script_for(self, request: WorkerRequest) -> Path:
        """The warm-worker array script (``pbs_templates/worker-array.pbs``): ``dwfhpc node worker`` with the
        queue and the walltime; the site's scratch and the stop margin it reads from the queue's
        ``settings.json`` (written by :class:`~dwfhpc.ingest.executors.workers.WorkerPoolExecutor`)."""
        res = self.pbs.resources(mem_gb=request.mem_gb, time_minutes=request.time_minutes)
        logs = self.jobs_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = self.jobs_dir / f"workers-{len(list(self.jobs_dir.glob('workers-*')))}{self.pbs.script_suffix}"
        text = render("pbs", f"worker-array{self.pbs.script_suffix}", setup=res.setup, queue=str(request.queue_root),
                      time_minutes=int(res.time_minutes),
                      directives=self.pbs.directives(res, job_name=request.name, ntasks=request.n, log_dir=logs),
                      command=f"{shlex.quote(sys.executable)} -m dwfhpc.cli")
        return atomic_write_text(out, text)

    def submit_workers(self, request: WorkerRequest) -> Submitted:
        job_id = self.pbs.submit(self.worker_script_for(request))
        return Submitted(job_id=job_id, task_ids=self.pbs.array_task_ids(job_id, request.n), folder=str(self.jobs_dir))

    def queue(self, task_ids: list[str]) -> dict[str, QueueEntry]:
        return self.pbs.queue(task_ids)

    def gone_reasons(self, tasks: list[tuple[str, str | None]]) -> dict[str, str]:
        return self.pbs.gone_reasons([tid for tid, _ in tasks])
