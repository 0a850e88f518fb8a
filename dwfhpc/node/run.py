"""What one array task does on a compute node, for one CCD.

stage the member into node-local scratch (streamed out of the part, sha256 verified) ->
decompress -> calibrate there (embedded, or through ``apptainer exec`` for ``container: true``,
photpipe and hscpipe), or file a calibration frame into the library -> copy back only the four
products to the shared FS through temporary names, renamed together -> clean scratch -> result.

A task-level failure (corrupt member, missing master, full scratch, a failing pipeline, MemoryError,
SIGTERM / SIGUSR2) is *returned* as ``status: failed`` with the reason and its
:class:`~dwfhpc.node.result.ErrorKind`; nothing partial is left in the products folder. Only
programming errors raise. The result is a :class:`~dwfhpc.node.result.TaskResult`; the entry
points return its JSON object (what submitit pickles and the result file holds).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import atomic_write_text
from ..errors import DwfError, IntegrityError
from ..instruments import instrument_for
from ..layout import ccd_stem, product_paths
from ..parts import read_manifest
from .calfiling import file_calibration_frame
from .result import ErrorKind, MastersUsed, QaSummary, TaskResult, TaskStatus, WcsSummary
from .scratch import SIGNALS, TaskInterrupted, scratch_trouble, task_scratch
from .spec import TaskSpec, result_path, task_index
from ..parts.bounds import check_manifest_bounds
from .stage import scratch_needed, stage_ccd
from .tuning import tune_malloc

if TYPE_CHECKING:
    from ..calibrate import CalibrationOutput
    from ..calibrate.masters import MasterChoice

STAGES = ("stage", "verify", "decompress", "calibrate", "qa", "copyback")


def find_masters(spec: TaskSpec, ccd: int) -> tuple[MasterChoice | None, MasterChoice | None]:
    """Master bias and flat for this CCD: tonight's, else the newest earlier night's within
    ``spec.masters_max_age_days`` (never a later night's); missing ones fail unless ``require_masters`` is off."""
    from ..calibrate.masters import choose_master  # the calibration stack (astropy, scipy, sep) after the CCD is staged

    age = spec.masters_max_age_days
    bias = choose_master(spec.masters, "bias", spec.night, ccd, max_age_days=age)
    flat = choose_master(spec.masters, "flat", spec.night, ccd, spec.filter, max_age_days=age)
    if spec.require_masters:
        within = f"nor any earlier night within {age} days" if age else "and falling back is off"
        if bias is None:
            raise DwfError(f"no master bias for night {spec.night} CCD {ccd} ({within})", spec.masters)
        if flat is None:
            raise DwfError(f"no master flat for night {spec.night} CCD {ccd} filter {spec.filter} ({within})",
                           spec.masters)
    return bias, flat


def masters_provenance(bias: MasterChoice | None, flat: MasterChoice | None) -> tuple[MastersUsed, dict[str, tuple]]:
    """What the result records (``TaskResult.masters``) and the product's header cards, for the masters used."""
    fallback = any(m is not None and m.fallback for m in (bias, flat))
    used = MastersUsed(bias=str(bias.path) if bias else None, flat=str(flat.path) if flat else None,
                       bias_night=bias.night if bias else None, flat_night=flat.night if flat else None,
                       fallback=fallback)
    cards = {"MBIAS": (bias.path.name if bias else "none", "master bias file"),
             "MBIASNT": (bias.night if bias else "none", "night of the master bias"),
             "MFLAT": (flat.path.name if flat else "none", "master flat file"),
             "MFLATNT": (flat.night if flat else "none", "night of the master flat"),
             "MFALLBK": (fallback, "an earlier night's masters were used")}
    return used, cards


@contextmanager
def _signals_blocked():
    """Hold SIGTERM/SIGUSR2 for a few syscalls (they are delivered when the block ends)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def prepare_copies(outputs: dict[str, Path], targets: dict[str, Path]) -> dict[str, Path]:
    """Copy each product to a temporary name (``.<name>.*.tmp``) beside its target; fsynced.

    On any failure (or interruption) the temporary files made so far are removed.
    """
    temps: dict[str, Path] = {}
    mask = os.umask(0)
    os.umask(mask)
    try:
        for key, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            temps[key] = Path(name)
            os.fchmod(fd, 0o666 & ~mask)
            os.close(fd)
            shutil.copyfile(outputs[key], temps[key])
            with open(temps[key], "rb+") as fh:
                os.fsync(fh.fileno())
    except OSError as exc:
        discard(temps)
        where = exc.filename or next(iter(targets.values())).parent
        raise DwfError(f"cannot copy products back ({exc.strerror or exc})", where) from None
    except BaseException:
        discard(temps)
        raise
    return temps


def commit_copies(temps: dict[str, Path], targets: dict[str, Path]) -> int:
    """Rename the temporary copies onto their targets (QA last); returns the bytes now on the shared FS."""
    order = [k for k in targets if k != "qa"] + (["qa"] if "qa" in targets else [])
    try:
        for key in order:
            os.replace(temps[key], targets[key])
        dir_fd = os.open(targets[order[0]].parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise DwfError(f"cannot rename products into place ({exc.strerror or exc})", exc.filename) from None
    return sum(targets[k].stat().st_size for k in order)


def discard(temps: dict[str, Path]) -> None:
    for tmp in temps.values():
        tmp.unlink(missing_ok=True)


def copy_back(outputs: dict[str, Path], targets: dict[str, Path], *,
              committed: Callable[[int], None] | None = None) -> int:
    """Copy products to the shared FS: all to temporary names, then renamed together with signals held.

    ``committed(bytes)`` runs once they are in place, still with signals held: a signal is delivered
    only after the caller has recorded the products.
    """
    temps = prepare_copies(outputs, targets)
    try:
        with _signals_blocked():
            written = commit_copies(temps, targets)
            if committed is not None:
                committed(written)
            return written
    finally:
        discard(temps)


def _calibrate(spec: TaskSpec, ccd: int, raw: Path, scratch: Path, result: TaskResult,
               pixels: tuple | None = None) -> CalibrationOutput:
    """The calibration step: embedded in this process, or one of the image-based backends (its warnings and,
    embedded, the masters used go into ``result``). ``pixels``: (header, uint16 array) staged in memory
    (embedded in this process only; ``raw`` then only names the CCD)."""
    from ..backends import run_job  # imported here: a task reaches its CCD before the calibration stack loads
    from ..backends.embedded import calibrate_job
    from ..backends.hscpipe import hscpipe_job
    from ..backends.photpipe import photpipe_job
    from ..calibrate import calibrate_file

    out_dir = scratch / "out"
    pixel_scale = instrument_for(spec.instrument).pixel_scale
    if spec.backend == "photpipe":
        job = photpipe_job(spec, ccd, raw, scratch, out_dir, pixel_scale=pixel_scale)
    elif spec.backend == "hscpipe":
        job = hscpipe_job(spec, ccd, raw, scratch, out_dir, pixel_scale=pixel_scale)
    else:
        bias_used, flat_used = find_masters(spec, ccd)
        bias, flat = (m.path if m else None for m in (bias_used, flat_used))
        result.masters, cards = masters_provenance(bias_used, flat_used)
        if not spec.container:
            t = time.perf_counter()
            out = calibrate_file(raw, out_dir, bias=bias, flat=flat, bpm=spec.bpm_dir, refcat=spec.refcat,
                                 prior_shift=spec.prior_shift(ccd), to_electrons=spec.to_electrons, ccd=ccd,
                                 qlevel=spec.qlevel, min_matches=spec.wcs_min_matches, cards=cards, pixels=pixels)
            qa = out.timings.get("qa", 0.0)
            out.timings = {"calibrate": time.perf_counter() - t - qa, "qa": qa}
            return out
        job = calibrate_job(raw, out_dir, expid=spec.expid, ccd=ccd, bias=bias, flat=flat, bpm=spec.bpm_dir,
                            refcat=spec.refcat, to_electrons=spec.to_electrons)
        if spec.prior_shift(ccd):
            result.warnings.append("prior WCS shift not applied: `dwfhpc calibrate` in the image has no --prior-shift")
    return run_job(job, image=spec.image, scratch=scratch, products=Path(spec.products), extra_binds=spec.binds,
                   apptainer=spec.apptainer, log=scratch / f"{job.name}.log")


def stage_in_memory(spec: TaskSpec) -> bool:
    """Only the embedded calibrator in this process takes the CCD in memory; filing and the image backends need the file."""
    return spec.kind == "science" and spec.backend == "embedded" and not spec.container


def _new_result(spec: TaskSpec | None, index: int | None, spec_path: Path | None) -> TaskResult:
    return TaskResult(status=TaskStatus.ERROR, index=index, spec=str(spec_path) if spec_path else None,
                      expid=spec.expid if spec else None, night=spec.night if spec else None,
                      kind=spec.kind if spec else None, filter=spec.filter if spec else None,
                      backend=spec.backend if spec else None, container=spec.container if spec else None,
                      attempt=spec.attempt if spec else None, host=socket.gethostname(), started=time.time())


#: what an interruption means: Slurm (submitit's ``--signal``) sends SIGUSR2 ahead of the time limit;
#: SIGTERM comes at the time limit, on preemption or on scancel alike
_SIGNAL_KINDS = {"SIGUSR2": ErrorKind.TIMEOUT, "SIGTERM": ErrorKind.INTERRUPTED}


def _integrity_kind(spec: TaskSpec) -> ErrorKind:
    """An IntegrityError while staging: the member does not match the manifest, unless the part is not there."""
    return ErrorKind.INTEGRITY if Path(spec.part_tar).is_file() else ErrorKind.OTHER


def run_spec(spec: TaskSpec, index: int, *, spec_path: str | os.PathLike[str] | None = None) -> dict:
    """Run task ``index`` of ``spec`` and return its result (contract 3) as a JSON object."""
    return run_spec_result(spec, index, spec_path=spec_path).to_dict()


def run_spec_result(spec: TaskSpec, index: int, *, spec_path: str | os.PathLike[str] | None = None) -> TaskResult:
    """Run task ``index`` of ``spec``: its :class:`TaskResult`."""
    tune_malloc()  # once per process
    result = _new_result(spec, index, Path(spec_path) if spec_path else None)
    timings: dict[str, float] = result.timings
    t_start = time.perf_counter()
    step = "setup"
    try:
        ccd = spec.ccd_for(index)
        result.ccd = ccd
        manifest = read_manifest(spec.manifest)
        member = manifest.member(ccd)
        result.member_bytes = member.bytes
        step = "stage"  # sizes that are no CCD of the instrument: the part's fault, found before scratch is sized
        check_manifest_bounds(manifest, ccd)
        with task_scratch(spec.scratch_vars, spec.scratch_fallback, scratch_needed(member, spec.scratch_factor),
                          spec.min_free_gb, ccd_stem(spec.expid, ccd)) as scratch:
            result.scratch = str(scratch)
            step = "stage"
            staged = stage_ccd(spec.part_tar, manifest, ccd, scratch, in_memory=stage_in_memory(spec))
            timings.update(staged.timings)
            if spec.kind in ("bias", "flat"):
                step = "copyback"
                t = time.perf_counter()
                filed = file_calibration_frame(staged.raw, spec.library, night=spec.night, ccd=ccd, kind=spec.kind,
                                               filter_=spec.filter, expid=spec.expid)
                timings["copyback"] = time.perf_counter() - t
                result.bytes_written = filed.stat().st_size
                result.products = {"raw": str(filed)}
            else:
                step = "calibrate"
                out = _calibrate(spec, ccd, staged.source, scratch, result, pixels=staged.in_memory)
                timings["calibrate"] = out.timings.get("calibrate", 0.0)
                timings["qa"] = out.timings.get("qa", 0.0)
                result.qa = QaSummary.from_dict({k: v for k, v in out.qa.items() if k != "wcs"})
                result.wcs = WcsSummary.from_dict(out.wcs)
                step = "copyback"
                t = time.perf_counter()
                targets = product_paths(Path(spec.products), spec.night, spec.expid, ccd)

                def record(written: int) -> None:  # a signal now is delivered once the products are recorded
                    result.bytes_written = written
                    result.products = {k: str(v) for k, v in targets.items()}
                    timings["copyback"] = time.perf_counter() - t

                copy_back(out.products, targets, committed=record)
        result.status = TaskStatus.OK
    except TaskInterrupted as exc:
        result.interrupted = exc.signame
        if result.products:  # the signal came after the products were complete
            result.status = TaskStatus.OK
        else:
            result.fail(str(exc), _SIGNAL_KINDS.get(exc.signame, ErrorKind.INTERRUPTED))
    except MemoryError:
        result.fail(f"out of memory (MemoryError) in the {step} step", ErrorKind.OUT_OF_MEMORY)
    except IntegrityError as exc:
        result.fail(str(exc), _integrity_kind(spec) if step == "stage" else ErrorKind.OTHER)
    except DwfError as exc:  # scratch missing, too small or full (ScratchError, or a full disk under a step's words)
        if step != "copyback" and scratch_trouble(exc, result.scratch, staging=step == "stage"):
            result.fail(str(exc), ErrorKind.RESOURCE)
        else:
            result.fail(str(exc), ErrorKind.CALIBRATION if step == "calibrate" else ErrorKind.OTHER)
    except OSError as exc:  # scratch or shared FS trouble outside the steps that explain it themselves
        result.fail(f"{exc.filename or 'file system'}: {exc.strerror or exc}",  # ENOSPC / EIO in this node's scratch:
                    ErrorKind.RESOURCE if step != "copyback" and scratch_trouble(exc, result.scratch,
                                                                                 staging=step == "stage")
                    else ErrorKind.OTHER)
    timings["total"] = time.perf_counter() - t_start
    result.timings = {k: round(v, 4) for k, v in timings.items()}
    result.finished = time.time()
    return result


def write_result(spec_path: str | os.PathLike[str], index: int, result: TaskResult | dict) -> Path:
    """Leave ``result`` beside the spec as ``<stem>.result-<index>.json`` (for PBS and manual runs)."""
    if not isinstance(result, TaskResult):
        result = TaskResult.from_dict(result)
    return atomic_write_text(result_path(spec_path, index), result.to_json(indent=1))


def run_task(spec_path: str | os.PathLike[str], index: int | None = None, *, write: bool = False) -> dict:
    """The node entry point: read the spec, run task ``index`` (default: from the array environment).

    ``write=True`` (the CLI) also leaves the result beside the spec; submitit gets the return value
    (the result's JSON object).
    """
    spec_path = Path(spec_path)
    spec = None
    try:
        index = task_index(index)
    except DwfError as exc:
        result = _new_result(spec, index, spec_path)
        result.fail(str(exc), ErrorKind.OTHER)
        result.finished = time.time()
        return result.to_dict()
    try:
        spec = TaskSpec.read(spec_path)
    except DwfError as exc:
        # a spec on disk that fails its checks fails them again: integrity, not retried (a missing one may
        # still be on its way over a slow shared file system)
        result = _new_result(spec, index, spec_path)
        result.fail(str(exc), ErrorKind.INTEGRITY if spec_path.is_file() else ErrorKind.OTHER)
        result.finished = time.time()
    else:
        result = run_spec_result(spec, index, spec_path=spec_path)
    if write and index is not None and spec_path.is_file():  # no spec, no folder of ours to write into
        try:
            write_result(spec_path, index, result)
        except OSError as exc:
            result.warnings.append(f"result file not written: {exc.strerror or exc}")
    return result.to_dict()


def index_from_environment() -> int | None:
    """The array index from the scheduler's environment, or None."""
    try:
        return task_index(None)
    except DwfError:
        return None


def array_task(spec_path: str, index: int) -> dict:
    """What submitit runs for array task ``index``: the node entry point, its result also left beside the spec.

    The file lets the collector read results the same way whichever scheduler (or a manual
    ``sbatch``/``qsub``) ran the task.
    """
    return run_task(spec_path, index, write=True)
