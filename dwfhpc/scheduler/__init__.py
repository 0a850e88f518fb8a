"""The batch schedulers dwfhpc submits to (Slurm, PBS Pro, Torque) behind one class.

Everything that runs ``sbatch``/``squeue``/``sacct``/``scontrol``/``scancel`` or
``qsub``/``qstat``/``qdel`` lives here and goes through :func:`run`; see :mod:`.base`.
"""

from __future__ import annotations

from ..config import SchedulerSettings, SiteSettings
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


def site_kind(site: SiteSettings | None) -> str:
    """The batch system a site submits to: ``pbs`` when ``ingest.executor`` is pbs, else ``slurm`` (also for the
    local executor, and with no site at all)."""
    return "pbs" if site is not None and site.ingest.executor == "pbs" else "slurm"


def site_scheduler(site: SiteSettings | None = None, *, call: Call = run) -> Scheduler:
    """THE place a site's scheduler is chosen: Slurm, or PBS Pro / Torque (``scheduler.pbs_array_syntax``) with the
    site's settings (queue, account, array syntax). Executors decide only how to launch on top of it."""
    return scheduler_for(site_kind(site), site.scheduler if site is not None else None, call=call)


__all__ = ["JOB_PREFIX", "SCHEDULERS", "Call", "CommandNotFound", "Pbs", "QueueEntry", "QueuedTask", "Resources", "Scheduler",
           "SchedulerState",
           "Slurm", "Torque", "job_name", "run", "scheduler_for", "site_kind", "site_scheduler", "walltime"]
