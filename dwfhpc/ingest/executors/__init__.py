"""Schedulers behind one executor interface: ``local`` (submitit LocalExecutor), ``slurm`` (submitit
SlurmExecutor), ``pbs`` (templates + qsub)."""

from __future__ import annotations

from ...config import SiteSettings
from ...errors import DwfError
from .base import ArrayExecutor, ArrayRequest, Outcome, Submitted, read_result_file, reason_from_text

EXECUTORS = ("local", "slurm", "pbs")


def make_executor(site: SiteSettings, kind: str | None = None) -> ArrayExecutor:
    """The executor named by ``kind`` (default: the site's ``ingest.executor``)."""
    kind = kind or site.ingest.executor
    jobs_dir = site.path(site.ingest.jobs_dir)
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


__all__ = ["EXECUTORS", "ArrayExecutor", "ArrayRequest", "Outcome", "Submitted", "make_executor",
           "read_result_file", "reason_from_text"]
