"""PBS Pro (``-J``) and Torque (``-t``) arrays from ``pbs_templates/calibrate-array.pbs``, submitted with ``qsub``.

Each task runs ``dwfhpc node run SPEC`` (index from $PBS_ARRAY_INDEX / $PBS_ARRAYID), which leaves
its result beside the spec: that file is the whole result channel. ``qstat -t`` once per poll
lists our subjobs still queued or running (:class:`dwfhpc.scheduler.Pbs` / ``Torque``).
"""

from __future__ import annotations

from pathlib import Path

from ...config import SiteSettings
from ...scheduler import Pbs, scheduler_for
from ...templates import write_array_script
from .base import ArrayExecutor, ArrayRequest, Submitted


class PbsArrayExecutor(ArrayExecutor):
    name = "pbs"

    def __init__(self, site: SiteSettings, jobs_dir: Path, *, pbs: Pbs | None = None):
        self.site = site
        self.jobs_dir = Path(jobs_dir)
        self.pbs = pbs or scheduler_for("pbs", site.scheduler)

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

    def queue(self, task_ids: list[str]) -> dict[str, str]:
        return self.pbs.queue(task_ids)

    def gone_reasons(self, tasks: list[tuple[str, str | None]]) -> dict[str, str]:
        return self.pbs.gone_reasons([tid for tid, _ in tasks])
