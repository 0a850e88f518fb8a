"""Slurm: ``#SBATCH`` directives, submitit's parameters, sbatch, squeue, sacct, scontrol, scancel.

Slurm's own words live here: squeue's states (:data:`SQUEUE_STATES`, translated into
:class:`~dwfhpc.states.SchedulerState`), its pending reasons (:data:`ORDINARY_WAIT`,
:data:`WAIT_MEANING`, read by :func:`waiting`) and sacct's states of a task that ended
(:data:`SACCT_REASONS`).

Works without accounting: where ``sacct`` fails (no slurmdbd) :meth:`Slurm.gone_reasons` says
nothing (remembered after the first failure) and the caller reads the task's log instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import DwfError
from ..states import QueueEntry, SchedulerState
from .base import CommandNotFound, QueuedTask, Resources, Scheduler, walltime

#: squeue's states (``%T``) -> dwfhpc's. As Parsl's SlurmProvider: CONFIGURING (nodes booting) is still
#: waiting, COMPLETING still holds its slot. A word not here (RESIZING, SIGNALING, STAGE_OUT, a final
#: state seen in passing: COMPLETED, CANCELLED, ...) is UNKNOWN, which the collector treats as waiting.
SQUEUE_STATES = {"PENDING": SchedulerState.PENDING, "CONFIGURING": SchedulerState.PENDING,
                 "REQUEUED": SchedulerState.PENDING, "REQUEUE_FED": SchedulerState.PENDING,
                 "SPECIAL_EXIT": SchedulerState.PENDING, "REQUEUE_HOLD": SchedulerState.HELD,
                 "RESV_DEL_HOLD": SchedulerState.HELD, "RUNNING": SchedulerState.RUNNING,
                 "COMPLETING": SchedulerState.COMPLETING, "SUSPENDED": SchedulerState.SUSPENDED,
                 "STOPPED": SchedulerState.SUSPENDED}
#: squeue's pending state (a held task is PENDING with reason JobHeldUser / JobHeldAdmin)
_PENDING = "PENDING"
#: pending reasons (``%r``) of the ordinary wait for a free slot (anything else is recorded as the task's ``waiting``)
ORDINARY_WAIT = frozenset({"", "None", "Priority", "Resources", "JobArrayTaskLimit", "QOSMaxJobsPerUserLimit",
                           "AssocMaxJobsLimit", "AssocGrpJobsLimit", "Dependency"})
#: what a pending reason means for a survey night, where it is not self-explanatory
WAIT_MEANING = {
    "BeginTime": "held back until a later start time (Slurm requeues a task whose launch failed, e.g. on a "
                 "node whose slurmd did not answer, with a delayed start)",
    "launch failed requeued held": "its launch failed on the node; Slurm requeued it and holds it "
                                   "(`scontrol release` frees it)",
    "JobHeldAdmin": "held by an administrator",
    "JobHeldUser": "held (`scontrol release` frees it)",
    "ReqNodeNotAvail": "the nodes it may run on are not available",
    "NodeDown": "its node is down",
    "PartitionDown": "its partition is down",
    "PartitionInactive": "its partition is inactive",
    "BadConstraints": "its requested resources can never be satisfied",
}

#: sacct states of a task that ended without a result -> the reason the collector acts on
SACCT_REASONS = {"TIMEOUT": "timeout", "OUT_OF_MEMORY": "oom", "CANCELLED": "cancelled", "NODE_FAIL": "node failure",
                 "PREEMPTED": "preempted", "FAILED": "failed", "BOOT_FAIL": "node failure", "DEADLINE": "timeout"}

_QUEUE_FORMAT = "%i|%j|%T|%r"


class Slurm(Scheduler):
    name = "slurm"
    directive_prefix = "#SBATCH"
    script_suffix = ".sbatch"
    submit_command = ("sbatch", "--parsable")
    cancel_command = "scancel"
    missing_hint = "is this a Slurm cluster (and SLURM_CONF set)?"
    array_log_name = "%x-%A_%a.out"
    job_log_name = "%x-%j.out"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._sacct_works: bool | None = None

    # ---------------------------------------------------------------- resources
    def directive_lines(self, res: Resources, *, job_name: str, ntasks: int = 1, log_dir: str | Path,
                        log_name: str | None = None) -> list[str]:
        opts = [f"--job-name={job_name}"]
        if ntasks > 1:
            opts.append(f"--array=0-{ntasks - 1}" + (f"%{res.array_parallelism}" if res.array_parallelism else ""))
        opts.append(f"--time={walltime(res.time_minutes)}")
        if res.nodes:
            opts += [f"--nodes={res.nodes}", "--ntasks-per-node=1"]
        if res.mem_mb:
            opts.append(f"--mem={res.mem_mb}M")
        if res.cpus:
            opts.append(f"--cpus-per-task={res.cpus}")
        if not res.nodes:
            opts.append("--ntasks=1")
        for key in ("partition", "account", "qos", "reservation"):
            if getattr(res, key):
                opts.append(f"--{key}={getattr(res, key)}")
        if res.tmp_mb:
            opts.append(f"--tmp={res.tmp_mb}M")
        opts.append(f"--output={log_dir}/{log_name or self.array_log_name}")
        if res.signal_delay_s:
            opts.append(f"--signal=B:USR2@{res.signal_delay_s}")
        opts += [f"--{key}={value}" for key, value in res.extra.items()]
        return [f"{self.directive_prefix} {o}" for o in opts]

    def submitit_parameters(self, res: Resources, *, job_name: str) -> dict:
        """The same resources as parameters of submitit's ``SlurmExecutor.update_parameters``."""
        extra = dict(res.extra)
        if res.reservation:
            extra["reservation"] = res.reservation
        if res.tmp_mb:
            extra["tmp"] = f"{res.tmp_mb}M"
        params = dict(job_name=job_name, time=int(res.time_minutes), setup=list(res.setup),
                      additional_parameters=extra)
        if res.mem_mb:
            params["mem"] = f"{res.mem_mb}MB"
        if res.cpus:
            params["cpus_per_task"] = res.cpus
        if res.array_parallelism:
            params["array_parallelism"] = res.array_parallelism
        if res.signal_delay_s:
            params["signal_delay_s"] = res.signal_delay_s
        for key in ("partition", "account", "qos"):
            if getattr(res, key):
                params[key] = getattr(res, key)
        return params

    # ---------------------------------------------------------------- submit and queue
    def parse_job_id(self, stdout: str) -> str:
        """``sbatch --parsable`` prints ``<id>`` or ``<id>;<cluster>``."""
        return super().parse_job_id(stdout).split(";")[0]

    def queue_argv(self, user: str | None = None) -> list[str]:
        return ["squeue", "-h", "-r", *(["-u", user] if user else []), "-o", _QUEUE_FORMAT]

    def parse_queue(self, text: str) -> list[QueuedTask]:
        """``squeue -h -r -o '%i|%j|%T|%r'`` -> tasks (array tasks expanded: ``123_4``)."""
        tasks = []
        for line in text.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 4 and parts[0]:
                tasks.append(self.queued_task(parts[0], "|".join(parts[1:-2]), parts[-2], parts[-1]))
        return tasks

    def translate(self, word: str, reason: str = "") -> QueueEntry:
        """squeue's state and reason -> :class:`QueueEntry` (:data:`SQUEUE_STATES`; the reason as Slurm gives it)."""
        return QueueEntry(SQUEUE_STATES.get(word, SchedulerState.UNKNOWN), reason or None)

    def display(self, word: str, reason: str = "") -> str:
        """Slurm's word; HELD for a pending task held by its user or an administrator (JobHeldUser/JobHeldAdmin)."""
        return SchedulerState.HELD if word == _PENDING and "Held" in reason else word

    def gone_reasons(self, task_ids: Sequence[str]) -> dict[str, str]:
        """One ``sacct`` call for all of them, where accounting exists (remembered after the first failure)."""
        if not task_ids or self._sacct_works is False:
            return {}
        try:
            proc = self._call(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(task_ids)], check=False)
        except CommandNotFound:
            self._sacct_works = False
            return {}
        self._sacct_works = proc.returncode == 0
        return parse_sacct(proc.stdout, task_ids) if self._sacct_works else {}

    # ---------------------------------------------------------------- the cluster
    def check(self) -> None:
        """Fail early and clearly when no Slurm controller answers (rather than retrying sbatch all night)."""
        conf = os.environ.get("SLURM_CONF")
        if conf and not Path(conf).is_file():
            raise DwfError(f"SLURM_CONF names a file that does not exist: {conf}")
        proc = self._call(["scontrol", "ping"], timeout=90, check=False)
        if proc.returncode != 0 or "UP" not in proc.stdout:
            text = (proc.stdout + proc.stderr).strip().splitlines()
            raise DwfError("no Slurm controller answers `scontrol ping`" + (f": {text[-1]}" if text else "")
                           + " (start one, or set SLURM_CONF)")

    def query_nodes(self) -> set[str] | None:
        """The nodes of the site's partition (all partitions when none is set), from ``sinfo``; None if it fails."""
        argv = ["sinfo", "-h", "-N", "-o", "%N"]
        if self.settings.partition:
            argv += ["-p", self.settings.partition]
        proc = self._call(argv, check=False)
        names = {line.strip() for line in proc.stdout.splitlines() if line.strip()}
        return names if proc.returncode == 0 and names else None

    def query_max_array_size(self) -> int | None:
        """MaxArraySize from ``scontrol show config`` (arrays may have at most this many tasks)."""
        proc = self._call(["scontrol", "show", "config"], check=False)
        m = re.search(r"^MaxArraySize\s*=\s*(\d+)", proc.stdout, re.M)
        return int(m.group(1)) if proc.returncode == 0 and m else None


def waiting(reason: str | None) -> str | None:
    """``REASON: meaning`` when a pending task waits for more than a free slot (:data:`WAIT_MEANING`), else None."""
    reason = reason or ""
    if reason in ORDINARY_WAIT:
        return None
    return f"{reason}: {WAIT_MEANING[reason]}" if reason in WAIT_MEANING else reason


def parse_sacct(text: str, task_ids: Sequence[str]) -> dict[str, str]:
    """``sacct -n -P -X -o JobID,State`` -> {task id: reason} for the states that say why (``CANCELLED by 0``)."""
    wanted, out = set(task_ids), {}
    for line in text.splitlines():
        tid, _, state = line.strip().partition("|")
        key = state.split()[0] if state.strip() else ""
        if tid in wanted and key in SACCT_REASONS:
            out[tid] = SACCT_REASONS[key]
    return out
