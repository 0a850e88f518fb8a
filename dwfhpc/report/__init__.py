"""The night report: a self-contained HTML page with plots, from the state DB."""

from .model import STAGES, CCDRecord, ExposureRecord, NightData, percentile
from .render import render_html, write_report

__all__ = ["STAGES", "CCDRecord", "ExposureRecord", "NightData", "percentile", "render_html", "write_report"]
