"""Slurm through submitit's SlurmExecutor: one array per request, one ``squeue`` per poll.

Resources, the queue query, ``sacct`` and ``scontrol`` are :class:`dwfhpc.scheduler.Slurm`'s;
submitit submits the arrays with the parameters it gives. Works without accounting: where
``sacct`` fails (no slurmdbd), a task that left the queue without a result is found by the
collector (this module only says what is still queued), and why it left is read from the
scheduler's lines in the task's log. Where ``sacct`` works, one call per poll for the vanished
tasks gives the state (TIMEOUT, OUT_OF_MEMORY, CANCELLED, ...).

Nodes excluded by ingest (:meth:`~.base.ArrayExecutor.exclude_nodes`: repeated resource failures) go into
every new array's and worker array's ``--exclude`` (submitit's ``exclude``), beside any the site's
``scheduler.extra`` excludes. Should sbatch refuse a submission with them (every node of the partition
excluded, or a name Slurm does not know), it is submitted once more without them, and that set of
exclusions is not applied again (logged once).
"""

from __future__ import annotations

import getpass
import logging
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import submitit

from ...config import SchedulerSettings
from ...errors import DwfError
from ...scheduler import Slurm
from ...states import QueueEntry
from .base import ArrayRequest, Submitted, WorkerRequest
from .submitit_common import SubmititArrayExecutor, log_reason, submit_array, submit_worker_array

log = logging.getLogger(__name__)

#: what a refused submission raises: sbatch's own failure, a missing sbatch, and submitit's FailedJobError (a
#: RuntimeError: sbatch said no, e.g. "Requested node configuration is not available" with every node excluded)
_REFUSED = (subprocess.CalledProcessError, FileNotFoundError, OSError, submitit.core.utils.FailedJobError)


def read_max_array_size() -> int | None:
    """MaxArraySize from ``scontrol show config`` (arrays may have at most this many tasks)."""
    return Slurm().query_max_array_size()


def with_exclude(params: dict, nodes: list[str]) -> dict:
    """submitit parameters with ``nodes`` added to ``exclude`` (merged with a site's ``extra: {exclude: ...}``)."""
    if not nodes:
        return params
    out = dict(params)
    extra = dict(out.get("additional_parameters") or {})
    names = [str(x) for x in (extra.pop("exclude", None), out.get("exclude")) if x]
    names += [n for n in nodes if n not in names]
    out["exclude"] = ",".join(names)
    out["additional_parameters"] = extra
    return out


class SlurmArrayExecutor(SubmititArrayExecutor):
    name = "slurm"
    @property
    def can_exclude_nodes(self) -> bool:
        """True unless sbatch refused the current excluded set (e.g. it is every node): then submissions go out
        without it, and draining a worker there would only start its successor on the same node."""
        return not (self.excluded_nodes and frozenset(self.excluded_nodes) == self._refused_exclusion)

    def __init__(self, jobs_dir: Path, scheduler: SchedulerSettings, *, slurm: Slurm | None = None):
        self.jobs_dir = Path(jobs_dir)
        self.slurm = slurm or Slurm(scheduler)
        self.user = getpass.getuser()
        self.slurm.check()
        self._max_array = self.slurm.max_array_size()
        self._refused_exclusion: frozenset[str] | None = None  # a set of exclusions sbatch would not take

    @property
    def queries(self) -> int:
        """Scheduler status queries made (benchmarks, tests)."""
        return self.slurm.queries

    def max_array_size(self) -> int | None:
        return self._max_array

    def exclude_nodes(self, nodes: Mapping[str, str]) -> None:
        """Leave ``nodes`` out of new submissions, unless they are every node of the partition (``sinfo``): then
        the set is not applied (as if sbatch had refused it), so nothing waits for a node that cannot come and no
        worker is drained only for its successor to land on the same node."""
        super().exclude_nodes(nodes)
        if not nodes or frozenset(nodes) == self._refused_exclusion:
            return
        known = self.slurm.query_nodes()
        if known and known <= set(nodes):
            self._refused_exclusion = frozenset(nodes)
            log.warning("node(s) %s not excluded: they are every node of the partition; submissions go on to them",
                        ",".join(sorted(nodes)))

    def _executor(self) -> submitit.SlurmExecutor:
        return submitit.SlurmExecutor(folder=self.jobs_dir / "%j")

    def parameters(self, request: ArrayRequest) -> dict:
        """submitit SlurmExecutor parameters for one request: the site's resources with this attempt's memory and time."""
        res = self.slurm.resources(mem_gb=request.mem_gb, time_minutes=request.time_minutes)
        return self.slurm.submitit_parameters(res, job_name=request.name)

    def _sbatch(self, params: dict, send: Callable[[submitit.SlurmExecutor], list], what: str) -> list:
        """Submit through submitit with the excluded nodes (once more without them if sbatch refuses them)."""
        nodes = sorted(self.excluded_nodes)
        if frozenset(nodes) == self._refused_exclusion:
            nodes = []
        ex = self._executor()
        ex.update_parameters(**with_exclude(params, nodes))
        try:
            return send(ex)
        except _REFUSED as exc:
            why = getattr(exc, "output", "") or exc
            if not nodes:
                raise DwfError(f"sbatch refused {what}: {why}") from None
        log.warning("sbatch refused %s with node(s) %s excluded (%s): submitting without excluding them while they "
                    "are the excluded set", what, ",".join(nodes), str(why).strip()[:300])
        self._refused_exclusion = frozenset(nodes)
        ex = self._executor()
        ex.update_parameters(**params)
        try:
            return send(ex)
        except _REFUSED as exc:
            raise DwfError(f"sbatch refused {what}: {getattr(exc, 'output', '') or exc}") from None

    def submit(self, request: ArrayRequest) -> Submitted:
        jobs = self._sbatch(self.parameters(request), lambda ex: submit_array(ex, request.spec, request.ntasks),
                            f"the array {request.name}")
        array_id = jobs[0].job_id.split("_")[0]
        return Submitted(job_id=array_id, task_ids=[j.job_id for j in jobs], folder=str(self.jobs_dir))

    def submit_workers(self, request: WorkerRequest) -> Submitted:
        res = self.slurm.resources(mem_gb=request.mem_gb, time_minutes=request.time_minutes)
        params = self.slurm.submitit_parameters(res, job_name=request.name)
        params["array_parallelism"] = request.n  # every worker at once: that is the point of them
        # never requeued: after a node failure Slurm would hold a requeued worker in the queue (pending, then
        # running again on the returned node) for minutes, with the CCD it had claimed; gone, its claims are
        # retried at once and the pool submits its successor
        params["additional_parameters"] = {**(params.get("additional_parameters") or {}), "no_requeue": True}
        jobs = self._sbatch(params, lambda ex: submit_worker_array(ex, request), f"the worker array {request.name}")
        return Submitted(job_id=jobs[0].job_id.split("_")[0], task_ids=[j.job_id for j in jobs],
                         folder=str(self.jobs_dir))

    def queue(self, task_ids: list[str]) -> dict[str, QueueEntry]:
        return self.slurm.queue(task_ids, user=self.user)

    def _job(self, task_id: str) -> submitit.SlurmJob:
        return submitit.SlurmJob(folder=self.jobs_dir / "%j", job_id=task_id)

    def gone_reasons(self, tasks: list[tuple[str, str | None]]) -> dict[str, str]:
        reasons = self.slurm.gone_reasons([tid for tid, _ in tasks])
        for tid, _ in tasks:
            if tid not in reasons and (r := log_reason(self._job(tid))):
                reasons[tid] = r
        return reasons
