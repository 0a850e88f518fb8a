"""Our array tasks in the scheduler's queue, by state (the seed's getjobs), in one query."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass

from ..errors import DwfError

JOB_PREFIX = "dwf-"


@dataclass(frozen=True)
class QueuedTask:
    job_id: str
    name: str
    state: str  # PENDING, RUNNING, ... ; held jobs are PENDING with reason JobHeldUser/JobHeldAdmin
    reason: str

    @property
    def display_state(self) -> str:
        return "HELD" if self.state == "PENDING" and "Held" in self.reason else self.state


def slurm_tasks(prefix: str = JOB_PREFIX) -> list[QueuedTask]:
    """Every task (array tasks expanded) of jobs whose name starts with ``prefix``; one squeue call."""
    if not shutil.which("squeue"):
        raise DwfError("squeue not found: is this a Slurm cluster (and SLURM_CONF set)?")
    proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%j|%T|%r"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise DwfError(f"squeue failed: {proc.stderr.strip()}")
    tasks = []
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 4 and parts[1].startswith(prefix):
            tasks.append(QueuedTask(*parts))
    return tasks


def by_state(tasks: list[QueuedTask]) -> dict[str, int]:
    return dict(Counter(t.display_state for t in tasks))
