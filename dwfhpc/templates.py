"""Render the scheduler scripts in ``slurm_templates/`` and ``pbs_templates/`` (jinja2).

The templates ship inside the package (``dwfhpc/templates/slurm`` and ``pbs`` point at the
repository folders), so admins can read and edit them, and a manual ``sbatch``/``qsub`` runs
exactly what submitit would: ``dwfhpc node run SPEC --index I``.
"""

from __future__ import annotations

import shlex
import sys
from importlib import resources
from pathlib import Path

import jinja2

from .atomic import atomic_write_text
from .config import SiteSettings
from .errors import DwfError
from .scheduler import JOB_PREFIX, SCHEDULERS, Resources, scheduler_for


def _environment(kind: str) -> jinja2.Environment:
    folder = Path(str(resources.files("dwfhpc") / "templates" / kind))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters["quote"] = lambda value: shlex.quote(str(value))
    return env


def render(kind: str, template: str, **context) -> str:
    """Render ``template`` from the ``slurm`` or ``pbs`` template folder."""
    if kind not in SCHEDULERS:
        raise DwfError(f"no templates for scheduler {kind!r} ({', '.join(SCHEDULERS)})")
    try:
        return _environment(kind).get_template(template).render(**context)
    except jinja2.TemplateNotFound:
        raise DwfError(f"no {kind} template {template!r}") from None
    except jinja2.UndefinedError as exc:
        raise DwfError(f"{kind} template {template!r}: {exc}") from None


def array_script(site: SiteSettings, kind: str, spec: str | Path, ntasks: int, job_name: str, log_dir: str | Path,
                 *, command: str | None = None, resources: Resources | None = None) -> str:
    """The calibration-array script for one task spec; ``resources`` default to the site's scheduler settings
    (ingest passes one attempt's memory and time)."""
    sched = scheduler_for(kind, site.scheduler)
    res = resources or sched.resources()
    return render(kind, f"calibrate-array{sched.script_suffix}", ntasks=ntasks, setup=res.setup, spec=str(spec),
                  directives=sched.directives(res, job_name=job_name, ntasks=ntasks, log_dir=log_dir),
                  command=command or f"{shlex.quote(sys.executable)} -m dwfhpc.cli")


def worker_script(site: SiteSettings, kind: str, queue_root: str | Path, n: int, job_name: str, log_dir: str | Path,
                  *, resources: Resources, stop_seconds: float, command: str | None = None) -> str:
    """An array of ``n`` warm workers on ``queue_root`` (``dwfhpc node worker``), for PBS or a manual sbatch."""
    sched = scheduler_for(kind, site.scheduler)
    return render(kind, f"worker-array{sched.script_suffix}", setup=resources.setup, queue=str(queue_root),
                  time_minutes=int(resources.time_minutes), stop_seconds=int(stop_seconds),
                  directives=sched.directives(resources, job_name=job_name, ntasks=n, log_dir=log_dir),
                  command=command or f"{shlex.quote(sys.executable)} -m dwfhpc.cli")


def write_array_script(site: SiteSettings, kind: str, spec: str | Path, ntasks: int, job_name: str, out: Path,
                       log_dir: str | Path, **kw) -> Path:
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, array_script(site, kind, spec, ntasks, job_name, log_dir, **kw))


def stage_image_script(site: SiteSettings, kind: str, image: str | Path, dest: str | Path, nodes: int,
                       log_dir: str | Path) -> str:
    """Script that copies ``image`` into ``dest`` on ``nodes`` nodes (checksum-verified, renamed into place)."""
    sched = scheduler_for(kind, site.scheduler)
    s = site.scheduler
    res = Resources(time_minutes=15, mem_gb=None, cpus=None, nodes=nodes, signal_delay_s=None, partition=s.partition,
                    account=s.account, reservation=s.reservation, queue=s.queue)
    directives = sched.directives(res, job_name=f"{JOB_PREFIX}stage-image", log_dir=log_dir, log_name=sched.job_log_name)
    return render(kind, f"stage-image{sched.script_suffix}", image=str(image), dest=str(dest), directives=directives)
