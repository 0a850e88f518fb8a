"""The embedded calibrator run inside the dwfhpc image: ``dwfhpc calibrate RAW ... --out DIR``."""

from __future__ import annotations

from pathlib import Path

from ..layout import ccd_stem
from . import BackendJob
from .apptainer import bind_spec
from .products import products_from_dir


def calibrate_job(raw: Path, out_dir: Path, *, expid: str, ccd: int, bias: Path | None, flat: Path | None,
                  bpm: str | None = None, refcat: str | list[str] | None = None, to_electrons: bool = False) -> BackendJob:
    """``dwfhpc calibrate`` of one staged CCD into ``out_dir``; masters/bpm/refcat bound read-only."""
    cmd = ["dwfhpc", "calibrate", str(raw), "--ccd", str(ccd), "--out", str(out_dir)]
    binds: list[str] = []
    for kind, master in (("bias", bias), ("flat", flat)):
        if master:
            cmd += [f"--{kind}", str(master)]
            binds.append(bind_spec(Path(master).parent, read_only=True))
        else:
            cmd.append(f"--no-{kind}")
    if bpm:
        cmd += ["--bpm", str(bpm)]
        binds.append(bind_spec(bpm, read_only=True))
    for cat in [refcat] if isinstance(refcat, str) else (refcat or []):
        cmd += ["--refcat", str(cat)]
        binds.append(bind_spec(Path(cat).parent, read_only=True))
    if to_electrons:
        cmd.append("--electrons")
    return BackendJob(name="dwfhpc", commands=[("calibrate " + ccd_stem(expid, ccd), cmd)], binds=binds,
                      collect=lambda: products_from_dir(out_dir, expid, ccd))
