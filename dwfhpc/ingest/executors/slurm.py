"""Slurm through submitit's SlurmExecutor: one array per request, one ``squeue`` per poll.

Works without accounting: where ``sacct`` fails (no slurmdbd), a task that left the queue without
a result is found by the collector (this module only says what is still queued), and why it left
is read from the scheduler's lines in the task's log. Where ``sacct`` works, one call per poll
for the vanished tasks gives the state (TIMEOUT, OUT_OF_MEMORY, CANCELLED, ...).
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
from pathlib import Path

import submitit

from ...config import SchedulerSettings
from ...errors import DwfError
from .base import ArrayExecutor, ArrayRequest, Outcome, Submitted
from .submitit_common import log_reason, pickle_outcome, submit_array

_SACCT_REASONS = {"TIMEOUT": "timeout", "OUT_OF_MEMORY": "oom", "CANCELLED": "cancelled", "NODE_FAIL": "node failure",
                  "PREEMPTED": "preempted", "FAILED": "failed", "BOOT_FAIL": "node failure", "DEADLINE": "timeout"}


def _run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    if not shutil.which(argv[0]):
        raise DwfError(f"{argv[0]} not found: is this a Slurm cluster (and SLURM_CONF set)?")
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def check_controller() -> None:
    """Fail early and clearly when no Slurm controller answers (rather than retrying sbatch all night)."""
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():
        raise DwfError(f"SLURM_CONF names a file that does not exist: {conf}")
    proc = _run(["scontrol", "ping"], timeout=90)
    if proc.returncode != 0 or "UP" not in proc.stdout:
        text = (proc.stdout + proc.stderr).strip().splitlines()
        raise DwfError("no Slurm controller answers `scontrol ping`" + (f": {text[-1]}" if text else "")
                       + " (start one, or set SLURM_CONF)")


def read_max_array_size() -> int | None:
    """MaxArraySize from ``scontrol show config`` (arrays may have at most this many tasks)."""
    proc = _run(["scontrol", "show", "config"])
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", proc.stdout, re.M)
    return int(m.group(1)) if proc.returncode == 0 and m else None


class SlurmArrayExecutor(ArrayExecutor):
    name = "slurm"

    def __init__(self, jobs_dir: Path, scheduler: SchedulerSettings):
        self.jobs_dir = Path(jobs_dir)
        self.s = scheduler
        self.user = getpass.getuser()
        check_controller()
        self._max_array = scheduler.max_array_size or read_max_array_size()
        self._sacct_works: bool | None = None
        self.queries = 0  # scheduler status queries made (benchmarks)

    def max_array_size(self) -> int | None:
        return self._max_array

    def _executor(self) -> submitit.SlurmExecutor:
        return submitit.SlurmExecutor(folder=self.jobs_dir / "%j")

    def parameters(self, request: ArrayRequest) -> dict:
        """submitit SlurmExecutor parameters for one request: resources from the site's scheduler settings."""
        s = self.s
        extra = dict(s.extra)
        if s.reservation:
            extra["reservation"] = s.reservation
        if s.tmp_gb:
            extra["tmp"] = f"{int(s.tmp_gb * 1024)}M"
        params = dict(job_name=request.name, time=int(request.time_minutes), mem=f"{int(request.mem_gb * 1024)}MB",
                      cpus_per_task=s.cpus_per_task, array_parallelism=s.array_parallelism, setup=list(s.setup),
                      signal_delay_s=60, additional_parameters=extra)
        for key in ("partition", "account", "qos"):
            if getattr(s, key):
                params[key] = getattr(s, key)
        return params

    def submit(self, request: ArrayRequest) -> Submitted:
        ex = self._executor()
        ex.update_parameters(**self.parameters(request))
        try:
            jobs = submit_array(ex, request.spec, request.ntasks)
        except (subprocess.CalledProcessError, FileNotFoundError, OSError) as exc:
            raise DwfError(f"sbatch refused the array {request.name}: {getattr(exc, 'output', '') or exc}") from None
        array_id = jobs[0].job_id.split("_")[0]
        return Submitted(job_id=array_id, task_ids=[j.job_id for j in jobs], folder=str(self.jobs_dir))

    def queue(self, task_ids: list[str]) -> dict[str, str]:
        if not task_ids:
            return {}
        self.queries += 1
        proc = _run(["squeue", "-h", "-r", "-u", self.user, "-o", "%i|%T"])
        if proc.returncode != 0:
            raise DwfError(f"squeue failed: {proc.stderr.strip()}")
        wanted = set(task_ids)
        out = {}
        for line in proc.stdout.splitlines():
            tid, _, state = line.partition("|")
            if tid in wanted:
                out[tid] = state
        return out

    def _job(self, task_id: str) -> submitit.SlurmJob:
        return submitit.SlurmJob(folder=self.jobs_dir / "%j", job_id=task_id)

    def outcome(self, spec: str, index: int, task_id: str | None, folder: str | None) -> Outcome | None:
        found = super().outcome(spec, index, task_id, folder)
        if found is None and task_id:
            found = pickle_outcome(self._job(task_id))
        return found

    def gone_reasons(self, tasks: list[tuple[str, str | None]]) -> dict[str, str]:
        reasons = self._sacct_reasons([tid for tid, _ in tasks])
        for tid, _ in tasks:
            if tid not in reasons and (r := log_reason(self._job(tid))):
                reasons[tid] = r
        return reasons

    def _sacct_reasons(self, task_ids: list[str]) -> dict[str, str]:
        """One ``sacct`` call for all of them, where accounting exists (remembered after the first failure)."""
        if not task_ids or self._sacct_works is False or not shutil.which("sacct"):
            return {}
        proc = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(task_ids)])
        self._sacct_works = proc.returncode == 0
        out = {}
        for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
            tid, _, state = line.partition("|")
            key = state.split()[0] if state else ""
            if tid in task_ids and key in _SACCT_REASONS:
                out[tid] = _SACCT_REASONS[key]
        return out
