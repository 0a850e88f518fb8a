"""What the two submitit executors share: array submission through ``map_array`` and result pickles."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import submitit
from submitit.core import utils as submitit_utils

from ...node import array_task
from ...node.result import TaskStatus
from .base import ArrayExecutor, Outcome, WorkerRequest, reason_from_text


def submit_array(executor: submitit.Executor, spec: Path, ntasks: int) -> list[submitit.Job]:
    """One array through submitit: task ``i`` calls :func:`dwfhpc.node.array_task` (spec, i)."""
    return executor.map_array(array_task, [str(spec)] * ntasks, list(range(ntasks)))


def submit_worker_array(executor: submitit.Executor, request: WorkerRequest) -> list[submitit.Job]:
    """``request.n`` tasks of :func:`dwfhpc.workers.worker.worker_main` through submitit: the queue and each
    task's walltime; the other settings (scratch, stop margin) it reads from the queue's ``settings.json``."""
    from ...workers.worker import worker_main

    n = request.n
    return executor.map_array(worker_main, [str(request.queue_root)] * n, [request.time_minutes] * n)


def pickle_outcome(job: submitit.Job) -> Outcome | None:
    """submitit's own record of a task: its result pickle, or the traceback of what it raised."""
    pickle = job.paths.result_pickle
    if not pickle.exists():
        return None
    try:
        kind, value = submitit_utils.pickle_load(pickle)
    except (EOFError, OSError, ValueError):
        return None  # still being written: next poll
    if kind == "success":
        return Outcome(result=value if isinstance(value, dict) else {"status": TaskStatus.ERROR,
                                                                      "error": f"unexpected result {value!r}"})
    lines = [line for line in str(value).strip().splitlines() if line.strip()]
    return Outcome(error=f"task raised: {lines[-1] if lines else value}")


def log_reason(job: submitit.Job) -> str | None:
    """Why a task vanished, from the scheduler's lines in its stderr/stdout logs."""
    for path in (job.paths.stderr, job.paths.stdout):
        try:
            text = Path(path).read_text(errors="replace")[-20000:]
        except OSError:
            continue
        reason = reason_from_text(text)
        if reason:
            return reason
    return None


class SubmititArrayExecutor(ArrayExecutor):
    """What the submitit executors share: a task's outcome is its result file, else submitit's pickle."""

    @abstractmethod
    def _job(self, task_id: str) -> submitit.Job:
        """submitit's handle on one of our tasks (its folder and pickles)."""

    def outcome(self, spec: str, index: int, task_id: str | None, folder: str | None) -> Outcome | None:
        found = super().outcome(spec, index, task_id, folder)
        if found is None and task_id:
            found = pickle_outcome(self._job(task_id))
        return found
