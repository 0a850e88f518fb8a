"""The embedded calibrator: overscan, bias, flat, masks, QA and WCS check for one CCD.

``calibrator`` (one raw CCD in, four products out), ``amplifiers``, ``masters``, ``bpm``, ``maskbits``,
``qa``, ``wcs``, ``products``, ``rawio``. Run in-process by the node, or in the dwfhpc image through
:mod:`dwfhpc.backends.embedded`.
"""

from .calibrator import CalibrationOutput, calibrate_array, calibrate_file, trimmed_header
from .masters import build_master, build_night_masters, copy_masters, find_master, read_master

__all__ = ["CalibrationOutput", "calibrate_array", "calibrate_file", "trimmed_header", "build_master",
           "build_night_masters", "copy_masters", "find_master", "read_master"]
