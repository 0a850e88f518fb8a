"""The night report: a self-contained HTML page with plots, from the state DB.

``collect`` (a night's data from the state DB and the push journal), ``counts`` (science vs calibration
CCD counts, one vocabulary for the report and ``dwfhpc status``), ``model``, ``render``.
"""

from .model import STAGES, CCDRecord, ExposureRecord, NightData, percentile
from .render import render_html, write_report

__all__ = ["STAGES", "CCDRecord", "ExposureRecord", "NightData", "percentile", "render_html", "write_report"]
