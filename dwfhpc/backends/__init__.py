"""Calibration steps that run inside an Apptainer image: photpipe, hscpipe, or dwfhpc itself.

Each backend prepares a :class:`BackendJob` in the task's scratch folder (inputs laid out as the
pipeline expects, the commands to run, the binds they need); :func:`run_job` runs its commands
through ``apptainer exec`` and collects the four dwfhpc products. Staging and copy-back stay on
the host (see :mod:`dwfhpc.node.run`). Modules: ``embedded`` (``dwfhpc calibrate`` in the dwfhpc
image, the embedded backend with ``container: true``; the calibrator itself is
:mod:`dwfhpc.calibrate.calibrator`), ``photpipe``, ``hscpipe``, ``apptainer`` (command lines),
``products`` (an external pipeline's output -> the four products).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..calibrate import CalibrationOutput
from ..errors import DwfError
from .apptainer import bind_spec, exec_argv, run_command


@dataclass
class BackendJob:
    """What to run in the image for one CCD, and how to turn its results into products."""

    name: str
    commands: list[tuple[str, list[str]]]  # (what, argv inside the image)
    collect: Callable[[], CalibrationOutput]
    binds: list[str] = field(default_factory=list)  # besides scratch and products
    env: dict[str, str] = field(default_factory=dict)
    pwd: Path | None = None


def run_job(job: BackendJob, *, image: str | None, scratch: Path, products: Path, extra_binds: list[str],
            apptainer: str = "apptainer", log: Path | None = None) -> CalibrationOutput:
    """Run every command of ``job`` through ``apptainer exec IMAGE`` and collect the products."""
    if not image:
        raise DwfError(f"the {job.name} calibration step runs in an Apptainer image: set node.image in the site config")
    products.mkdir(parents=True, exist_ok=True)
    binds = [bind_spec(scratch), bind_spec(products), *job.binds, *extra_binds]
    t = time.perf_counter()
    for what, command in job.commands:
        argv = exec_argv(image, command, binds=binds, env=job.env, pwd=job.pwd, apptainer=apptainer)
        run_command(argv, what=f"{job.name} {what}", log=log)
    seconds = time.perf_counter() - t
    out = job.collect()
    out.timings["calibrate"] = seconds
    out.timings.setdefault("qa", 0.0)
    return out


__all__ = ["BackendJob", "run_job", "bind_spec", "exec_argv", "run_command"]
