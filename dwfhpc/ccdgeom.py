"""Move pixels between the raw frame and the trimmed, assembled CCD frame, per amplifier.

Every mapping comes from the header's sections (:class:`~dwfhpc.instruments.CCDGeometry`):
an amplifier's raw DATASEC lands on its CCDSEC, flipped along an axis when exactly one of
the two ranges is reversed.
"""

from __future__ import annotations

import numpy as np

from .instruments.base import Amplifier, CCDGeometry


def orient(block: np.ndarray, amp: Amplifier) -> np.ndarray:
    """Flip a block between raw read order and CCD order (an axis flips when one range is reversed)."""
    if amp.data.y_reversed != amp.ccd.y_reversed:
        block = block[::-1, :]
    if amp.data.x_reversed != amp.ccd.x_reversed:
        block = block[:, ::-1]
    return block


def assemble(raw: np.ndarray, geometry: CCDGeometry, dtype=np.float32) -> np.ndarray:
    """The trimmed CCD image assembled from every amplifier's data section of ``raw``."""
    out = np.empty(geometry.trimmed_shape, dtype=dtype)
    for amp in geometry.amps:
        out[amp.ccd.slices] = orient(raw[amp.data.slices], amp)
    return out


def scatter(trimmed: np.ndarray, geometry: CCDGeometry, raw: np.ndarray) -> np.ndarray:
    """The inverse of :func:`assemble`: write a trimmed image into the data sections of ``raw``."""
    for amp in geometry.amps:
        raw[amp.data.slices] = orient(trimmed[amp.ccd.slices], amp)
    return raw


def amp_columns(geometry: CCDGeometry) -> np.ndarray:
    """Index of the amplifier that reads each raw column (prescan columns go to the nearest amp)."""
    nx = geometry.raw_shape[1]
    cols = np.arange(nx)
    owner = np.full(nx, -1)
    spans = []
    for i, amp in enumerate(geometry.amps):
        lo = min(amp.data.slices[1].start, amp.bias.slices[1].start)
        hi = max(amp.data.slices[1].stop, amp.bias.slices[1].stop)
        owner[lo:hi] = i
        spans.append((lo, hi))
    free = owner < 0
    if free.any():
        centres = np.array([(lo + hi) / 2 for lo, hi in spans])
        owner[free] = np.argmin(np.abs(cols[free, None] - centres[None, :]), axis=1)
    return owner
