"""A warm worker's node-local copy of the calibrations: masters, bad-pixel masks, reference catalog.

Copied into the worker's scratch once, and again only when ingest says new masters were built
(the queue's masters generation moved on). A task then stages only its own CCD member; the spec it
runs is the ticket's spec with ``masters``, ``bpm_dir`` and ``refcat`` pointing at the copies.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from datetime import date
from pathlib import Path

from ..node.spec import TaskSpec

log = logging.getLogger(__name__)


def _nights(root: Path) -> list[str]:
    out = []
    for d in root.iterdir() if root.is_dir() else ():
        try:
            date.fromisoformat(d.name)
        except ValueError:
            continue
        if d.is_dir():
            out.append(d.name)
    return out


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
        self.copies = 0
        self._nights: set[tuple[str, str]] = set()  # (shared masters root, night) already here
        self._static: dict[str, Path] = {}  # shared path -> local copy (bpm dir, refcat)

    def refresh(self, generation: int) -> bool:
        """Forget copied masters when the generation moved on; True if it did."""
        if self.generation == generation:
            return False
        if self.generation is not None:
            log.info("new masters (generation %d): copying them again", generation)
        self.generation = generation
        shutil.rmtree(self.root / "masters", ignore_errors=True)
        self._nights.clear()
        return True

    def localise(self, spec: TaskSpec) -> TaskSpec:
        """``spec`` with its calibration paths replaced by node-local copies (made if missing)."""
        changes: dict[str, object] = {}
        if spec.kind == "science" and spec.backend == "embedded":
            changes["masters"] = str(self._masters(Path(spec.masters), spec.night, spec.masters_max_age_days))
        if spec.bpm_dir and Path(spec.bpm_dir).is_dir():
            changes["bpm_dir"] = str(self._static_copy(Path(spec.bpm_dir), "bpm"))
        if isinstance(spec.refcat, str) and Path(spec.refcat).is_file():
            changes["refcat"] = str(self._static_copy(Path(spec.refcat), "refcat"))
        return dataclasses.replace(spec, **changes) if changes else spec

    def discard(self) -> None:
        """Remove the copies (the worker is leaving): a scratch that outlives the job (``/tmp``, the
        fallback) would otherwise keep a night's masters per worker, and another per replacement."""
        shutil.rmtree(self.root, ignore_errors=True)
        self._nights.clear()
        self._static.clear()
        self.generation = None

    # ------------------------------------------------------------------ helpers
    def _masters(self, shared: Path, night: str, max_age_days: int) -> Path:
        """A local masters root holding what ``choose_master`` may pick for ``night``: tonight's masters, and the
        newest earlier night's within ``max_age_days`` (the fallback while tonight's are not all built)."""
        from ..calibrate.masters import usable_nights

        local = self.root / "masters" / f"{abs(hash(str(shared))):x}"
        local.mkdir(parents=True, exist_ok=True)
        usable = usable_nights(shared, night, max_age_days)  # tonight first, then earlier nights, newest first
        wanted = usable[:2] if usable and usable[0] == night else usable[:1]
        for n in wanted:
            if (str(shared), n) not in self._nights:
                self.copied_bytes += _copy_tree(shared / n, local / n)
                self.copies += 1
                self._nights.add((str(shared), n))
        return local

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
