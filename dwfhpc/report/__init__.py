"""The night report: a self-contained HTML page with plots, from the state DB.

``collect`` (a night's data from the state DB and the push journal), ``counts`` (science vs calibration
CCD counts, one vocabulary for the report and ``dwfhpc status``), ``model``, ``render``.
"""

from .model import STAGES, CCDRecord, ExposureRecord, NightData, percentile


def __getattr__(name: str):
    """``render_html`` / ``write_report`` import matplotlib: only when asked for (``dwfhpc status`` never is)."""
    if name in ("render_html", "write_report"):
        from . import render

        return getattr(render, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["STAGES", "CCDRecord", "ExposureRecord", "NightData", "percentile", "render_html", "write_report"]
