"""Schedulers behind one executor interface (``base.ArrayExecutor``): ``local`` (submitit LocalExecutor),
``slurm`` (submitit SlurmExecutor), ``pbs`` (templates + qsub); ``workers`` runs warm workers through
any of them. :func:`make_executor` builds the site's; ``Ingest(site, executor=...)`` takes another."""

from __future__ import annotations

from pathlib import Path

from ...config import SiteSettings
from ...errors import DwfError
from ...layout import JobFiles
from .base import ArrayExecutor, ArrayRequest, Outcome, Submitted, read_result_file, reason_from_text

EXECUTORS = ("local", "slurm", "pbs")


def make_executor(site: SiteSettings, kind: str | None = None) -> ArrayExecutor:
    """The executor named by ``kind`` (default: the site's ``ingest.executor``); with ``ingest.workers``
    the same scheduler runs a pool of warm workers instead of one array per part."""
    inner = _scheduler_executor(site, kind or site.ingest.executor)
    ing = site.ingest
    if not ing.workers:
        return inner
    from .workers import WorkerPoolExecutor

    return WorkerPoolExecutor(inner, worker_queue_root(site), n=ing.workers,
                              mem_gb=ing.worker_mem_gb or site.scheduler.mem_gb, time_minutes=ing.worker_time_minutes,
                              replace_minutes=ing.worker_replace_minutes, stop_minutes=ing.worker_stop_minutes,
                              scratch_vars=site.node.scratch_vars, scratch_fallback=site.node.scratch_fallback)


def worker_queue_root(site: SiteSettings) -> Path:
    """The shared-FS work queue of worker mode (``<jobs_dir>/workers``)."""
    return JobFiles.for_site(site).worker_queue


def _scheduler_executor(site: SiteSettings, kind: str) -> ArrayExecutor:
    jobs_dir = JobFiles.for_site(site).jobs
    if kind == "local":
        from .local import LocalArrayExecutor

        return LocalArrayExecutor(jobs_dir)
    if kind == "slurm":
        from .slurm import SlurmArrayExecutor

        return SlurmArrayExecutor(jobs_dir, site.scheduler)
    if kind == "pbs":
        from .pbs import PbsArrayExecutor

        return PbsArrayExecutor(site, jobs_dir)
    raise DwfError(f"unknown executor {kind!r} ({', '.join(EXECUTORS)})")


__all__ = ["EXECUTORS", "worker_queue_root", "ArrayExecutor", "ArrayRequest", "Outcome", "Submitted", "make_executor",
           "read_result_file", "reason_from_text"]
