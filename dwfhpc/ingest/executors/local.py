"""submitit's LocalExecutor: node tasks as processes on this machine (the embedded default)."""

from __future__ import annotations

import os
from pathlib import Path

import submitit

from ...states import QueueEntry, SchedulerState
from .base import ArrayRequest, Submitted, WorkerRequest
from .submitit_common import SubmititArrayExecutor, log_reason, submit_array, submit_worker_array


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class LocalArrayExecutor(SubmititArrayExecutor):
    name = "local"

    def __init__(self, jobs_dir: Path):
        self.jobs_dir = Path(jobs_dir)
        self.jobs: dict[str, submitit.Job] = {}  # ours since start: reaped through their Popen

    def default_max_jobs(self) -> int | None:
        return os.cpu_count() or 1

    def _executor(self) -> submitit.LocalExecutor:
        return submitit.LocalExecutor(folder=self.jobs_dir / "%j")

    def submit(self, request: ArrayRequest) -> Submitted:
        ex = self._executor()
        ex.update_parameters(timeout_min=request.time_minutes, name=request.name)
        jobs = submit_array(ex, request.spec, request.ntasks)
        for job in jobs:
            self.jobs[job.job_id] = job
        return Submitted(job_id=None, task_ids=[j.job_id for j in jobs], folder=str(self.jobs_dir))

    def submit_workers(self, request: WorkerRequest) -> Submitted:
        ex = self._executor()
        ex.update_parameters(timeout_min=request.time_minutes, name=request.name)
        jobs = submit_worker_array(ex, request)
        for job in jobs:
            self.jobs[job.job_id] = job
        return Submitted(job_id=None, task_ids=[j.job_id for j in jobs], folder=str(self.jobs_dir))

    def queue(self, task_ids: list[str]) -> dict[str, QueueEntry]:
        """A live process is running (this "scheduler" has no queue and no reasons)."""
        alive = {}
        for tid in task_ids:
            job = self.jobs.get(tid)
            proc = getattr(job, "_process", None) if job else None
            running = proc.poll() is None if proc is not None else _alive(int(tid))
            if running:
                alive[tid] = QueueEntry(SchedulerState.RUNNING)
        return alive

    def _job(self, task_id: str) -> submitit.Job:
        return self.jobs.get(task_id) or submitit.LocalJob(folder=self.jobs_dir / "%j", job_id=task_id)

    def gone_reasons(self, tasks: list[tuple[str, str | None]]) -> dict[str, str]:
        return {tid: r for tid, _ in tasks if (r := log_reason(self._job(tid)))}

    def close(self) -> None:
        for job in self.jobs.values():
            proc = getattr(job, "_process", None)
            if proc is not None:
                proc.poll()
