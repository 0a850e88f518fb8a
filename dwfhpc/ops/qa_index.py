"""Every calibrated CCD's QA, read from the products tree (``<products>/<night>/<expid>/*.qa.json``)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


from ..errors import DwfError
from ..report.model import median_of_known
from .lookup import match_exposure


@dataclass(frozen=True)
class ExposureQA:
    night: str
    expid: str
    field: str
    filter: str
    n_ccds: int
    fwhm: float | None  # median over CCDs, arcsec (instrument pixel scale applied by the calibrator)
    ellipticity: float | None
    sky: float | None
    n_sources: float | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def exposures(products: Path, night: str | None = None) -> list[ExposureQA]:
    """Per-exposure QA medians, oldest exposure first."""
    products = Path(products)
    if night is not None and not (products / night).is_dir():
        known = sorted(p.name for p in products.iterdir() if p.is_dir()) if products.is_dir() else []
        raise DwfError(f"no calibrated data for night {night} (nights: {', '.join(known) or 'none'})", products)
    pattern = f"{night}/*/*.qa.json" if night else "*/*/*.qa.json"
    by_exposure: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for f in products.glob(pattern):
        try:
            qa = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        by_exposure[(f.parent.parent.name, f.parent.name)].append(qa)
    out = []
    for (n, expid), qas in sorted(by_exposure.items(), key=lambda kv: kv[0][1]):
        out.append(ExposureQA(night=n, expid=expid, field=qas[0].get("field", ""), filter=qas[0].get("filter", ""),
                              n_ccds=len(qas), fwhm=median_of_known([q.get("fwhm_arcsec") for q in qas]),
                              ellipticity=median_of_known([q.get("ellipticity") for q in qas]),
                              sky=median_of_known([q.get("sky") for q in qas]),
                              n_sources=median_of_known([q.get("n_sources") for q in qas])))
    return out


def find_exposure(items: list[ExposureQA], wanted: str) -> ExposureQA:
    """By expid (``DECam_01100005``) or exposure number (``1100005``)."""
    found = match_exposure(wanted, items, expid=lambda e: e.expid)
    if found is None:
        raise DwfError(f"no calibrated exposure {wanted!r}")
    return found
