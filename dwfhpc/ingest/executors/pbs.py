"""PBS Pro (``-J``) and Torque (``-t``) arrays from ``pbs_templates/calibrate-array.pbs``, submitted with ``qsub``.

Each task runs ``dwfhpc node run SPEC`` (index from $PBS_ARRAY_INDEX / $PBS_ARRAYID), which leaves
its result beside the spec: that file is the whole result channel. ``qstat -t`` once per poll
lists our subjobs still queued or running.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from ...config import SiteSettings
from ...errors import DwfError
from ...templates import write_array_script
from .base import ArrayExecutor, ArrayRequest, Submitted

_STATES = {"Q": "PENDING", "H": "HELD", "R": "RUNNING", "E": "COMPLETING", "B": "RUNNING", "W": "PENDING",
           "T": "PENDING", "S": "SUSPENDED"}


def subjob_ids(array_id: str, ntasks: int) -> list[str]:
    """``123[].server`` -> ``123[0].server``, ``123[1].server``, ...; a plain job (one task) keeps its id."""
    if "[]" not in array_id:
        return [array_id]
    return [array_id.replace("[]", f"[{i}]") for i in range(ntasks)]


def parse_qstat(text: str) -> dict[str, str]:
    """``qstat -t`` table -> {job id: state}. Ids are compared without the server suffix."""
    out = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and re.match(r"^\d+(\[\d*\])?", fields[0]):
            out[fields[0].split(".")[0]] = _STATES.get(fields[-2], fields[-2])
    return out


class PbsArrayExecutor(ArrayExecutor):
    name = "pbs"

    def __init__(self, site: SiteSettings, jobs_dir: Path):
        self.site = site
        self.jobs_dir = Path(jobs_dir)

    def script_for(self, request: ArrayRequest) -> Path:
        site = self.site.model_copy(deep=True)
        site.scheduler.mem_gb = request.mem_gb
        site.scheduler.time_minutes = request.time_minutes
        out = self.jobs_dir / f"{request.spec.stem}.pbs"
        return write_array_script(site, "pbs", request.spec, request.ntasks, request.name, out, self.jobs_dir / "logs")

    def submit(self, request: ArrayRequest) -> Submitted:
        if not shutil.which("qsub"):
            raise DwfError("qsub not found: is this a PBS cluster? (scripts can be written with --emit-scripts)")
        script = self.script_for(request)
        proc = subprocess.run(["qsub", str(script)], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise DwfError(f"qsub refused {script.name}: {proc.stderr.strip()}", script)
        array_id = proc.stdout.strip()
        return Submitted(job_id=array_id, task_ids=subjob_ids(array_id, request.ntasks), folder=str(self.jobs_dir))

    def queue(self, task_ids: list[str]) -> dict[str, str]:
        if not task_ids:
            return {}
        proc = subprocess.run(["qstat", "-t"], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise DwfError(f"qstat failed: {proc.stderr.strip()}")
        states = parse_qstat(proc.stdout)
        return {tid: states[tid.split(".")[0]] for tid in task_ids if tid.split(".")[0] in states}
