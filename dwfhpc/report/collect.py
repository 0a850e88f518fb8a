"""A night's :class:`NightData` from the state DB (and the push journal, where it is on this machine).

Latency of an exposure runs from *file complete at the telescope* (push journal; without it, the
first part's arrival in the inbox) to its last CCD's products. Stages: pack and transfer from the
journal; queue (part in the inbox -> task started: verification, throttles, waiting for masters,
the scheduler), stage (stage + verify + decompress), calibrate (calibrate + QA) and copyback from
the tasks' own timings, as medians over the exposure's CCDs.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..config import SiteSettings
from ..node.result import QaSummary, WcsSummary
from ..statedb import StateDB, TaskRow
from ..states import TASK_DISPLAY, PartState, TaskState
from .counts import ccd_counts
from .model import CCDRecord, ExposureRecord, NightData, median_of_known
from .timeline import NODE_STAGES, CcdTimeline, journal_rows, timelines


def _journal(site: SiteSettings):
    from ..push import Journal

    path = site.path(site.push.journal)
    return Journal(path) if path and path.exists() else None


def _stages(timelines: list[CcdTimeline]) -> dict[str, float]:
    """Medians over the exposure's done CCDs of the node's stages (:data:`~.timeline.NODE_STAGES`) and of the
    queue as the report shows it: the part in the inbox -> the node code started (verification, throttles,
    waiting for masters, the scheduler or a free worker)."""
    done = [t for t in timelines if t.state == TaskState.DONE and t.timings]
    if not done:
        return {}
    per = [t.stages() for t in done]
    out = {s: float(np.median([p[s] for p in per])) for s in NODE_STAGES}
    waits = [w for t in done if (w := t.cluster_wait) is not None]
    if waits:
        out["queue"] = max(0.0, float(np.median(waits)))
    return out


def nights(db: StateDB) -> list[str]:
    return sorted({p.night for p in db.parts() if p.night})


def night_data(site: SiteSettings, db: StateDB, night: str, instrument: str | None = None) -> NightData:
    """Exposures and CCDs of ``night`` as the report shows them."""
    journal = _journal(site)
    every_part = db.parts(night=night)
    parts = [p for p in every_part if p.state != PartState.QUARANTINED]
    tasks = db.tasks(night=night)
    by_exp: dict[str, list[TaskRow]] = defaultdict(list)
    for t in tasks:
        by_exp[t.expid].append(t)
    sent_exposures, sent_parts = journal_rows(journal)
    if journal:
        journal.close()
    lines: dict[str, list[CcdTimeline]] = defaultdict(list)
    for tl in timelines(tasks, {p.stem: p for p in every_part}, sent_exposures, sent_parts):
        lines[tl.expid].append(tl)
    exposures, ccds = [], []
    for expid in sorted({p.expid for p in parts}, key=lambda e: min(p.expnum or 0 for p in parts if p.expid == e)):
        eparts = [p for p in parts if p.expid == expid]
        ets = by_exp.get(expid, [])
        first = eparts[0]
        qa = [t.result.qa for t in ets if t.state == TaskState.DONE and t.result]
        rec = ExposureRecord(expid=expid, expnum=first.expnum or 0, kind=first.kind, filter=first.filter or "",
                             field=first.field or "", n_ccds=len(ets), n_done=sum(t.state == TaskState.DONE for t in ets),
                             stages=_stages(lines.get(expid, [])),
                             fwhm=median_of_known(q.fwhm_arcsec for q in qa),
                             sky=median_of_known(q.sky for q in qa), nsources=median_of_known(q.n_sources for q in qa))
        row = sent_exposures.get(expid)
        rec.t_complete = row.t_complete if row and row.t_complete else min(p.t_inbox or 0 for p in eparts) or None
        if row and row.t_complete and row.t_packed:
            rec.stages["pack"] = row.t_packed - row.t_complete
        if row and row.t_packed and row.t_delivered:
            rec.stages["transfer"] = row.t_delivered - row.t_packed
        if ets and all(t.state == TaskState.DONE for t in ets):
            rec.t_products = max(t.t_finished for t in ets if t.t_finished)
        exposures.append(rec)
        for t in ets:
            q, w = (t.result.qa, t.result.wcs) if t.result else (QaSummary(), WcsSummary())
            ccds.append(CCDRecord(expid, t.ccd, TASK_DISPLAY[TaskState(t.state)], t.attempt, t.reason,
                                  fwhm=q.fwhm_arcsec, ellipticity=q.ellipticity, sky=q.sky, nsources=q.n_sources,
                                  wcs_status=str(w.status) if w.status else None))
    inst = instrument or (parts[0].instrument if parts else site.instrument)
    from .status import excluded_nodes, mode, spread_of_done

    return NightData(night, inst, exposures, ccds, counts=ccd_counts(db, night), mode=mode(site, db),
                     queue_seconds=spread_of_done(tasks, "t_submitted", "t_started"),
                     stops=db.resubmission_stops(night), excluded_nodes=excluded_nodes(db, site))


def write_night_reports(site: SiteSettings, db: StateDB, night: str | None = None,
                        out_dir: Path | None = None) -> list[Path]:
    """Write ``night-<night>.html`` for ``night`` (default: every night in the DB)."""
    from .render import write_report

    out_dir = Path(out_dir) if out_dir else site.path(site.ingest.report_dir)
    return [write_report(night_data(site, db, n), out_dir) for n in ([night] if night else nights(db))]
