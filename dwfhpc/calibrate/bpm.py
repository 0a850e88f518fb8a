"""Bad-pixel masks as box lists (ECSV: x0, y0, width, height; 0-based, trimmed frame; meta DETECTOR = CCD)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..errors import DwfError


@lru_cache(maxsize=8)
def _index(folder: str) -> dict[int, Path]:
    out = {}
    for f in sorted(Path(folder).glob("*.ecsv")):
        try:
            detector = Table.read(f).meta.get("DETECTOR")
        except (OSError, ValueError) as exc:
            raise DwfError(f"unreadable bad-pixel list ({exc})", f) from None
        if detector is not None:
            out[int(detector)] = f
    return out


def bpm_file(bpm: str | Path, ccd: int) -> Path | None:
    """The box list of ``ccd``: ``bpm`` is a file, or a folder of per-CCD files."""
    p = Path(bpm)
    if p.is_dir():
        return _index(str(p.resolve())).get(ccd)
    if not p.exists():
        raise DwfError("no such bad-pixel mask", p)
    return p


@lru_cache(maxsize=128)
def _boxes(path: str, mtime_ns: int) -> np.ndarray:
    try:
        t = Table.read(path)
        boxes = np.array([t["x0"], t["y0"], t["width"], t["height"]]).T.astype(int).reshape(-1, 4)
    except (OSError, ValueError, KeyError) as exc:
        raise DwfError(f"not a bad-pixel box list (x0, y0, width, height): {exc}", path) from None
    boxes.setflags(write=False)
    return boxes


def bad_pixel_boxes(path: str | Path) -> np.ndarray:
    """The (x0, y0, width, height) boxes of ``path``, read once per file version (cached)."""
    p = Path(path).resolve()
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as exc:
        raise DwfError(f"not a bad-pixel box list (x0, y0, width, height): {exc.strerror or exc}", path) from None
    return _boxes(str(p), mtime)


def flag_boxes(mask: np.ndarray, boxes: np.ndarray, bit: int) -> None:
    """OR ``bit`` into ``mask`` inside every box (in place; boxes clipped to the frame)."""
    for x0, y0, w, h in boxes:
        region = mask[max(y0, 0) : y0 + h, max(x0, 0) : x0 + w]
        region |= np.asarray(bit, mask.dtype)


def bad_pixel_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the boxes in ``path`` on a trimmed frame of ``shape``."""
    boxes = bad_pixel_boxes(path)
    mask = np.zeros(shape, bool)
    for x0, y0, w, h in boxes:
        mask[max(y0, 0) : y0 + h, max(x0, 0) : x0 + w] = True
    return mask
