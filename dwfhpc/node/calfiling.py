"""File a raw calibration CCD (bias, dome flat) into the calibration library."""

from __future__ import annotations

import os
from pathlib import Path

from ..atomic import atomic_copy
from ..errors import DwfError
from ..layout import library_path


def file_calibration_frame(raw_ccd: str | os.PathLike[str], library: str | os.PathLike[str], *, night: str, ccd: int,
                           kind: str, filter_: str, expid: str) -> Path:
    """Copy a decompressed raw bias/flat CCD to ``layout.library_path`` through a temporary name.

    A frame already filed (a part delivered twice, a retried task) is replaced, never duplicated.
    """
    if kind not in ("bias", "flat"):
        raise DwfError(f"only bias and flat frames are filed in the library, not {kind!r}", raw_ccd)
    target = library_path(Path(library), night, ccd, kind, filter_, expid)
    try:
        return atomic_copy(raw_ccd, target)
    except OSError as exc:
        raise DwfError(f"cannot file the {kind} frame ({exc.strerror or exc})", target) from None
