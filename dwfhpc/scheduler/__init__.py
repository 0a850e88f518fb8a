"""The batch schedulers dwfhpc submits to (Slurm, PBS Pro, Torque) behind one class.

Everything that runs ``sbatch``/``squeue``/``sacct``/``scontrol``/``scancel`` or
``qsub``/``qstat``/``qdel`` lives here and goes through :func:`run`; see :mod:`.base`.
"""

from __future__ import annotations

from ..config import SchedulerSettings
from ..errors import DwfError
from ..states import QueueEntry, SchedulerState
from .base import (JOB_PREFIX, Call, CommandNotFound, QueuedTask, Resources, Scheduler, job_name, run,
                   walltime)
from .pbs import Pbs, Torque
from .slurm import Slurm

SCHEDULERS = ("slurm", "pbs")


def scheduler_for(kind: str, settings: SchedulerSettings | None = None, *, call: Call = run) -> Scheduler:
    """``slurm`` -> :class:`Slurm`; ``pbs`` -> :class:`Pbs` (PBS Pro, ``-J``) or :class:`Torque` (``-t``),
    from ``settings.pbs_array_syntax``."""
    settings = settings or SchedulerSettings()
    if kind == "slurm":
        return Slurm(settings, call=call)
    if kind == "pbs":
        return (Torque if settings.pbs_array_syntax == "t" else Pbs)(settings, call=call)
    raise DwfError(f"unknown scheduler {kind!r} ({', '.join(SCHEDULERS)})")


__all__ = ["JOB_PREFIX", "SCHEDULERS", "Call", "CommandNotFound", "Pbs", "QueueEntry", "QueuedTask", "Resources", "Scheduler",
           "SchedulerState",
           "Slurm", "Torque", "job_name", "run", "scheduler_for", "walltime"]
