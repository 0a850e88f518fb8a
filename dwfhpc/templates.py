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


def _environment(kind: str) -> jinja2.Environment:
    folder = Path(str(resources.files("dwfhpc") / "templates" / kind))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters["quote"] = lambda value: shlex.quote(str(value))
    return env


def _walltime(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def render(kind: str, template: str, **context) -> str:
    """Render ``template`` from the ``slurm`` or ``pbs`` template folder."""
    if kind not in ("slurm", "pbs"):
        raise DwfError(f"no templates for scheduler {kind!r} (slurm, pbs)")
    try:
        return _environment(kind).get_template(template).render(**context)
    except jinja2.TemplateNotFound:
        raise DwfError(f"no {kind} template {template!r}") from None
    except jinja2.UndefinedError as exc:
        raise DwfError(f"{kind} template {template!r}: {exc}") from None


def array_script(site: SiteSettings, kind: str, spec: str | Path, ntasks: int, job_name: str, log_dir: str | Path,
                 *, command: str | None = None) -> str:
    """The calibration-array script for one task spec, resources from the site's scheduler settings."""
    s = site.scheduler
    context = dict(
        job_name=job_name, ntasks=ntasks, parallelism=s.array_parallelism, time=_walltime(s.time_minutes),
        mem_mb=int(s.mem_gb * 1024), cpus=s.cpus_per_task, partition=s.partition, account=s.account, qos=s.qos,
        reservation=s.reservation, queue=s.queue, tmp_mb=int(s.tmp_gb * 1024) if s.tmp_gb else None,
        log_dir=str(log_dir), setup=s.setup, extra=s.extra, syntax=s.pbs_array_syntax, spec=str(spec),
        command=command or f"{shlex.quote(sys.executable)} -m dwfhpc.cli",
    )
    name = "calibrate-array.sbatch" if kind == "slurm" else "calibrate-array.pbs"
    return render(kind, name, **context)


def write_array_script(site: SiteSettings, kind: str, spec: str | Path, ntasks: int, job_name: str, out: Path,
                       log_dir: str | Path, **kw) -> Path:
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, array_script(site, kind, spec, ntasks, job_name, log_dir, **kw))


def stage_image_script(site: SiteSettings, kind: str, image: str | Path, dest: str | Path, nodes: int,
                       log_dir: str | Path) -> str:
    """Script that copies ``image`` into ``dest`` on ``nodes`` nodes (checksum-verified, renamed into place)."""
    s = site.scheduler
    name = "stage-image.sbatch" if kind == "slurm" else "stage-image.pbs"
    return render(kind, name, image=str(image), dest=str(dest), nodes=nodes, partition=s.partition,
                  account=s.account, reservation=s.reservation, queue=s.queue, syntax=s.pbs_array_syntax,
                  log_dir=str(log_dir))
