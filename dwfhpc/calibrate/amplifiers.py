"""Per-amplifier overscan subtraction, saturation flags, trimming and assembly (geometry from the header)."""

from __future__ import annotations

import numpy as np

from ..ccdgeom import orient
from ..errors import FitsFormatError
from ..instruments.base import Amplifier, CCDGeometry
from . import maskbits

EDGE_COLUMNS = 3  # overscan columns next to the data and the prescan are skipped


def overscan_columns(amp: Amplifier, skip: int = EDGE_COLUMNS) -> slice:
    cols = amp.bias.slices[1]
    width = cols.stop - cols.start
    if width <= 2 * skip:
        return cols
    return slice(cols.start + skip, cols.stop - skip)


def overscan_rows(raw: np.ndarray, amp: Amplifier, skip: int = EDGE_COLUMNS) -> np.ndarray:
    """Robust row-wise overscan level: the median of each overscan row, edge columns skipped."""
    rows = amp.bias.slices[0]
    return np.median(raw[rows, overscan_columns(amp, skip)], axis=1)


def overscan_trim_assemble(raw: np.ndarray, geometry: CCDGeometry, *, to_electrons: bool = False, path=None,
                           out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask): overscan-subtracted, trimmed, assembled float32 image and its saturation mask.

    ``out``: (float32 image, uint8 mask) buffers of the trimmed shape to fill instead of new arrays.
    """
    if raw.shape != geometry.raw_shape:
        raise FitsFormatError(f"pixels are {raw.shape}, the header's geometry says {geometry.raw_shape}", path)
    if out is None:
        image = np.empty(geometry.trimmed_shape, np.float32)
        mask = np.zeros(geometry.trimmed_shape, np.uint8)
    else:
        image, mask = out
        if image.shape != geometry.trimmed_shape or image.dtype != np.float32 or mask.shape != image.shape \
                or mask.dtype != np.uint8:
            raise ValueError(f"out buffers must be float32 and uint8 of shape {geometry.trimmed_shape}")
        mask.fill(0)
    for amp in geometry.amps:
        rows = amp.data.slices[0]
        if (amp.bias.slices[0].start, amp.bias.slices[0].stop) != (rows.start, rows.stop):
            raise FitsFormatError(f"amp {amp.name}: overscan rows {amp.bias} do not match data rows {amp.data}", path)
        data = raw[amp.data.slices]
        level = overscan_rows(raw, amp).astype(np.float32)[:, None]
        # write straight into the (flipped when needed) view of the destination: no temporaries
        dest = orient(image[amp.ccd.slices], amp)
        np.subtract(data, level, out=dest, casting="unsafe")
        if to_electrons:
            dest *= np.float32(amp.gain)
        if amp.saturate:
            flags = orient(mask[amp.ccd.slices], amp)
            np.bitwise_or(flags, maskbits.SATURATED, out=flags, where=data >= amp.saturate)
    return image, mask
