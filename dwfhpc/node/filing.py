"""File a raw calibration CCD (bias, dome flat) into the calibration library."""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_copy
from ..layout import library_path


def file_calibration(raw_ccd: Path, library: str | Path, night: str, ccd: int, kind: str, filter_: str, expid: str) -> Path:
    target = library_path(Path(library), night, ccd, kind, filter_, expid)
    return atomic_copy(raw_ccd, target)
