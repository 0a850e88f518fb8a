"""What one array task does on a compute node, for one CCD.

stage the member into node-local scratch (streamed out of the part, sha256 verified) ->
decompress -> calibrate there (or file a calibration frame into the library) -> copy back
only the final products, each through a temporary name -> clean scratch -> return a small
result (status, QA, timings per stage, product paths, bytes written to the shared FS).

A task-level failure (corrupt member, missing master, full scratch, interruption) is returned
as ``status: failed`` with the reason; nothing partial is left in the products folder.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from pathlib import Path

from ..atomic import atomic_copy, atomic_write_text
from ..calibrate import calibrate_file, find_master
from ..errors import DwfError
from ..layout import ccd_fits_name, product_paths
from ..parts import extract_member, read_manifest, restore_ccd
from .filing import file_calibration
from .scratch import task_scratch
from .spec import TaskSpec, result_path

INDEX_VARIABLES = ("SLURM_ARRAY_TASK_ID", "PBS_ARRAY_INDEX", "PBS_ARRAYID")


def index_from_environment() -> int | None:
    for var in INDEX_VARIABLES:
        if os.environ.get(var, "").strip().isdigit():
            return int(os.environ[var])
    return None


class _Clock:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(self.timings.get(stage, 0.0) + now - self._t, 4)
        self._t = now


def _masters(spec: TaskSpec, ccd: int) -> tuple[Path | None, Path | None]:
    bias = find_master(spec.masters, "bias", spec.night, ccd)
    flat = find_master(spec.masters, "flat", spec.night, ccd, spec.filter)
    if spec.require_masters:
        if bias is None:
            raise DwfError(f"no master bias for night {spec.night} CCD {ccd} (nor any nearby night)", spec.masters)
        if flat is None:
            raise DwfError(f"no master flat for night {spec.night} CCD {ccd} filter {spec.filter}", spec.masters)
    return bias, flat


def _copy_back(outputs: dict[str, Path], targets: dict[str, Path]) -> int:
    """Copy products to the shared FS through temporary names; on failure remove what was copied."""
    copied: list[Path] = []
    try:
        for key, src in outputs.items():
            copied.append(atomic_copy(src, targets[key]))
    except OSError as exc:
        for p in copied:
            p.unlink(missing_ok=True)
        raise DwfError(f"cannot copy products back ({exc.strerror or exc})", targets[key].parent) from None
    return sum(p.stat().st_size for p in copied)


def run_task(spec_path: str | os.PathLike[str], index: int | None = None) -> dict:
    """Run task ``index`` of the spec; the result is returned and also written beside the spec."""
    started = time.time()
    spec_path = Path(spec_path)
    index = index_from_environment() if index is None else index
    result: dict = {"status": "failed", "error": None, "index": index, "spec": str(spec_path), "host": socket.gethostname(),
                    "started": started, "timings": {}, "products": {}, "bytes_written": 0, "qa": {}, "wcs": {}}
    clock = _Clock()
    try:
        if index is None:
            raise DwfError("no task index: give --index or run inside an array job", spec_path)
        spec = TaskSpec.read(spec_path)
        ccd = spec.ccd_for(index, spec_path)
        result.update(expid=spec.expid, ccd=ccd, night=spec.night, kind=spec.kind, attempt=spec.attempt)
        manifest = read_manifest(spec.manifest)
        member = manifest.member(ccd)
        ny, nx = member.shape
        need = member.bytes + 40 * ny * nx  # member + raw + float image + products, generously
        with task_scratch(spec.scratch_vars, spec.scratch_fallback, need, spec.min_free_gb,
                          f"{spec.expid}-{ccd:02d}") as scratch:
            result["scratch"] = str(scratch)
            staged = extract_member(spec.part_tar, manifest, ccd, scratch / "in")
            clock.lap("stage")  # includes the sha256 check, done while streaming
            raw = restore_ccd(staged, member, manifest, scratch / ccd_fits_name(spec.expid, ccd))
            staged.unlink()
            clock.lap("decompress")
            if spec.kind in ("bias", "flat"):
                filed = file_calibration(raw, spec.library, spec.night, ccd, spec.kind, spec.filter, spec.expid)
                result["products"] = {"raw": str(filed)}
                result["bytes_written"] = filed.stat().st_size
                clock.lap("copyback")
            else:
                bias, flat = _masters(spec, ccd)
                prior = spec.prior_shifts.get(str(ccd))
                out = calibrate_file(raw, scratch / "out", bias=bias, flat=flat, bpm=spec.bpm_dir,
                                     refcat=spec.refcat, prior_shift=tuple(prior) if prior else None,
                                     to_electrons=spec.to_electrons, qlevel=spec.qlevel)
                clock.lap("calibrate")
                result["timings"]["qa"] = round(out.timings.get("qa", 0.0), 4)
                targets = product_paths(Path(spec.products), spec.night, spec.expid, ccd)
                result["bytes_written"] = _copy_back(out.products, targets)
                result["products"] = {k: str(v) for k, v in targets.items()}
                result["qa"] = {k: v for k, v in out.qa.items() if k != "wcs"}
                result["wcs"] = out.wcs
                clock.lap("copyback")
        result["status"] = "ok"
    except DwfError as exc:
        result["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - a node task must always report, never die silently
        result["error"] = f"unexpected {type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc(limit=8)
    clock.lap("cleanup")
    result["timings"].update(clock.timings)
    result["finished"] = time.time()
    try:
        atomic_write_text(result_path(spec_path, index if index is not None else -1), json.dumps(result, default=str))
    except OSError:
        pass  # the caller still gets the result (submitit pickles it)
    return result
