"""Bits of the mask product (``.mask.fits.fz``); also written as MASKBn keywords in its header."""

from __future__ import annotations

BAD = 1  # bad pixel or column from the bad-pixel mask (incl. the masked CCD edges)
SATURATED = 2  # raw value at or above the amplifier's saturation level (SATURATA/B)
NO_FLAT = 4  # master flat below 0.2 (vignetted or dead): flat-fielding meaningless
NOT_FINITE = 8  # not a finite number after calibration

BITS = {"BAD": BAD, "SATURATED": SATURATED, "NO_FLAT": NO_FLAT, "NOT_FINITE": NOT_FINITE}


def describe(header) -> None:
    """Document the bits in a FITS header."""
    for i, (name, value) in enumerate(BITS.items()):
        header[f"MASKB{i}"] = (value, f"mask bit {value}: {name}")
