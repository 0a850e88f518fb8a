"""Process tuning for node tasks and warm workers: glibc malloc thresholds.

A CCD's arrays are tens of MB each. By default glibc serves such blocks with fresh ``mmap`` pages and
unmaps them on ``free``, so every CCD faults its pages in (and the kernel zeroes them) again. Raising
``M_MMAP_THRESHOLD`` (256 MiB) keeps them in the heap, and ``M_TRIM_THRESHOLD`` (512 MiB) keeps freed
heap mapped for the next CCD. Only on glibc Linux; any failure is ignored (the defaults stay).
``DWFHPC_MALLOPT=0`` in the environment turns it off (for measurements).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024 * 1024
TRIM_THRESHOLD = 512 * 1024 * 1024

_state: dict[str, bool] = {}


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


def tune_malloc() -> bool:
    """Set the malloc thresholds once per process; True when glibc took them."""
    if "tuned" in _state:
        return _state["tuned"]
    ok = False
    if os.environ.get("DWFHPC_MALLOPT", "1") != "0" and _glibc():
        try:
            libc = ctypes.CDLL(None)
            mallopt = libc.mallopt
            mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
            mallopt.restype = ctypes.c_int
            ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
        except (OSError, AttributeError):
            ok = False
    _state["tuned"] = ok
    return ok
