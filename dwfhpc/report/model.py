"""What a night report shows: exposures with their latency breakdown, and CCDs with their QA."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field

import numpy as np

# Latency stages from file complete (telescope) to products on the shared file system.
STAGES = ("pack", "transfer", "queue", "stage", "calibrate", "copyback")


def median_of_known(values) -> float | None:
    """Median of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


@dataclass
class CCDRecord:
    expid: str
    ccd: int
    state: str  # queued, running, done, failed, lost
    attempts: int = 0
    reason: str | None = None
    fwhm: float | None = None
    ellipticity: float | None = None
    sky: float | None = None
    nsources: int | None = None
    wcs_status: str | None = None


@dataclass
class ExposureRecord:
    expid: str
    expnum: int
    kind: str = "science"
    filter: str = ""
    field: str = ""
    n_ccds: int = 0
    n_done: int = 0
    t_complete: float | None = None  # file complete at the telescope (unix time)
    t_products: float | None = None  # last CCD's products on the shared file system
    stages: dict[str, float] = dc_field(default_factory=dict)  # seconds per stage
    fwhm: float | None = None  # medians over CCDs
    sky: float | None = None
    nsources: float | None = None

    @property
    def latency(self) -> float | None:
        if self.t_complete is None or self.t_products is None:
            return None
        return self.t_products - self.t_complete


@dataclass
class NightData:
    night: str
    instrument: str
    exposures: list[ExposureRecord] = dc_field(default_factory=list)
    ccds: list[CCDRecord] = dc_field(default_factory=list)
    # science / calibration CCD counts (:func:`dwfhpc.report.counts.ccd_counts`); None: from ``ccds``
    counts: dict | None = None
    # how CCDs ran: {"mode": "arrays"|"workers", "workers": {...}} (:func:`dwfhpc.report.status.mode`)
    mode: dict | None = None
    # per CCD, submitted -> running and running -> products (p50/p95 dicts from the status summary)
    queue_seconds: dict | None = None
    # exposures / nights the runaway-resubmission guard stopped
    stops: list[dict] = dc_field(default_factory=list)
    # nodes excluded for repeated resource failures (:func:`dwfhpc.report.status.excluded_nodes`: node, reason, ...)
    excluded_nodes: list[dict] = dc_field(default_factory=list)
