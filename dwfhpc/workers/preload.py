"""A warm worker's node-local copy of the calibrations: masters, bad-pixel masks, reference catalog.

Masters are copied per CCD, when a CCD first needs them: the master bias and flat that
:func:`~dwfhpc.calibrate.masters.choose_master` picks in the shared masters (tonight's, else the
newest earlier night's within the age limit), each copied again when the shared file changed (size
or mtime) or tonight's appeared where an earlier night's was used. A night's masters are ~4 GB for
DECam (62 CCDs x bias + flat, float32), and tonight's are still being written while science starts
on earlier ones, so a worker neither copies the whole night nor keeps a copy made half-way through a
build. When ingest says new masters were built (the queue's masters generation moved on) the copies
are dropped. Bad-pixel masks and the reference catalog are copied once. A task then stages only its
own CCD member; the spec it runs is the ticket's spec with ``masters``, ``bpm_dir`` and ``refcat``
pointing at the copies.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from ..node.spec import TaskSpec

log = logging.getLogger(__name__)


def _skip_temporaries(folder: str, names: list[str]) -> list[str]:
    """Names ``copytree`` leaves out: dot-files, the temporaries of :func:`dwfhpc.atomic.atomic_path` (a master
    being written right now is renamed into place later, or vanishes)."""
    return [n for n in names if n.startswith(".")]


def _copy_tree(src: Path, dst: Path, attempts: int = 3) -> int:
    """Copy ``src`` to ``dst`` through a temporary folder renamed into place; returns bytes copied.

    Masters may be built while a worker copies them (science starts on an earlier night's masters
    while tonight's are made): temporaries are skipped, and a file that vanished under the copy is
    copied again on a second pass."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    for attempt in range(1, attempts + 1):
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(src, tmp, ignore=_skip_temporaries)
            break
        except (shutil.Error, FileNotFoundError) as exc:
            if attempt == attempts:
                raise
            log.info("%s changed while it was copied (%s): copying it again", src, str(exc)[:200])
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())


class CalibrationCache:
    """Node-local copies of what every CCD task reads besides its own member."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.generation: int | None = None
        self.copied_bytes = 0
        self.copies = 0  # files copied (masters, per CCD) and folders (bpm) or files (refcat) copied once
        self._masters_seen: dict[str, tuple[int, int]] = {}  # local master -> (size, mtime_ns) of its source
        self._static: dict[str, Path] = {}  # shared path -> local copy (bpm dir, refcat)

    def refresh(self, generation: int) -> bool:
        """Forget copied masters when the generation moved on; True if it did."""
        if self.generation == generation:
            return False
        if self.generation is not None:
            log.info("new masters (generation %d): copying them again", generation)
        self.generation = generation
        shutil.rmtree(self.root / "masters", ignore_errors=True)
        self._masters_seen.clear()
        return True

    def localise(self, spec: TaskSpec, ccd: int | None = None) -> TaskSpec:
        """``spec`` with its calibration paths replaced by node-local copies (made if missing or out of date) for
        ``ccd`` (None: every CCD of the spec)."""
        changes: dict[str, object] = {}
        if spec.kind == "science" and spec.backend == "embedded":
            ccds = [ccd] if ccd is not None else list(spec.ccds)
            changes["masters"] = str(self._masters(Path(spec.masters), spec.night, spec.filter, ccds,
                                                   spec.masters_max_age_days))
        if spec.bpm_dir and Path(spec.bpm_dir).is_dir():
            changes["bpm_dir"] = str(self._static_copy(Path(spec.bpm_dir), "bpm"))
        if isinstance(spec.refcat, str) and Path(spec.refcat).is_file():
            changes["refcat"] = str(self._static_copy(Path(spec.refcat), "refcat"))
        return dataclasses.replace(spec, **changes) if changes else spec

    def discard(self) -> None:
        """Remove the copies (the worker is leaving): a scratch that outlives the job (``/tmp``, the
        fallback) would otherwise keep a night's masters per worker, and another per replacement."""
        shutil.rmtree(self.root, ignore_errors=True)
        self._masters_seen.clear()
        self._static.clear()
        self.generation = None

    # ------------------------------------------------------------------ helpers
    def _masters(self, shared: Path, night: str, filter_: str | None, ccds: list[int], max_age_days: int) -> Path:
        """A local masters root (the shared layout) holding, for each of ``ccds``, the bias and flat that
        ``choose_master`` picks in ``shared`` now; the node's own ``choose_master`` then picks the same there."""
        from ..calibrate.masters import choose_master

        local = self.root / "masters" / f"{abs(hash(str(shared))):x}"
        local.mkdir(parents=True, exist_ok=True)
        for ccd in ccds:
            for kind, flt in (("bias", None), ("flat", filter_)):
                choice = choose_master(shared, kind, night, ccd, flt, max_age_days=max_age_days)
                if choice is not None:  # none: the node says which master is missing
                    self._copy_master(choice.path, local / choice.path.relative_to(shared))
        return local

    def _copy_master(self, src: Path, dst: Path) -> None:
        st = src.stat()
        stamp = (st.st_size, st.st_mtime_ns)
        if self._masters_seen.get(str(dst)) == stamp and dst.is_file():
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.copy")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
        self._masters_seen[str(dst)] = stamp
        self.copied_bytes += stamp[0]
        self.copies += 1

    def _static_copy(self, shared: Path, label: str) -> Path:
        key = str(shared)
        if key not in self._static:
            target = self.root / f"{label}-{abs(hash(key)):x}"
            if shared.is_dir():
                self.copied_bytes += _copy_tree(shared, target)
            else:
                target.mkdir(parents=True, exist_ok=True)
                target = target / shared.name
                shutil.copyfile(shared, target)
                self.copied_bytes += target.stat().st_size
            self.copies += 1
            self._static[key] = target
        return self._static[key]
