"""``dwfhpc demo``: a simulated night through the toolkit on this machine.

Biases and dome flats first, then science exposures appearing in the telescope's raw folder at a
cadence. The real ``dwfhpc push`` (watcher, packing pool, N rsync streams, journal) carries each
complete exposure's parts into the cluster inbox; each verified part becomes one job array
through submitit's LocalExecutor (node tasks stage through scratch exactly as on a cluster).
Masters are built from the night's calibration frames once they are filed. Ends with the latency
table (file complete -> products) broken down by stage, and the night report.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import submitit

from .calibrate import build_night_masters
from .config import SiteSettings, load_site
from .errors import DwfError
from .layout import tar_for_manifest
from .node import TaskSpec, run_task
from .parts import read_manifest, verify_part
from .push import Journal, Push, PushOptions
from .report import STAGES, CCDRecord, ExposureRecord, NightData, percentile, write_report
from .simulate import night_start, simulate_decam_exposure


@dataclass
class ExposureRun:
    expid: str
    kind: str
    expnum: int = 0
    t_complete: float | None = None
    stages: dict[str, float] = field(default_factory=dict)
    results: list[dict] = field(default_factory=list)
    jobs: list = field(default_factory=list)
    t_products: float | None = None


class Cluster:
    """The cluster side of the demo: verified parts from the inbox become submitit arrays of node tasks."""

    def __init__(self, site: SiteSettings):
        self.site = site
        self.inbox = site.path(site.ingest.inbox)
        self.specs = site.path(site.ingest.specs)
        self.executor = submitit.LocalExecutor(folder=site.path(site.ingest.jobs_dir) / "%j")
        self.executor.update_parameters(timeout_min=site.scheduler.time_minutes)
        self.seen: set[str] = set()
        self.runs: dict[str, ExposureRun] = {}

    def poll(self, require_masters: bool) -> list[ExposureRun]:
        """Submit every new complete part in the inbox; return the exposures that got new arrays."""
        touched = []
        for manifest_path in sorted(self.inbox.glob("*.manifest.json")):
            if manifest_path.name in self.seen:
                continue
            tar = tar_for_manifest(manifest_path)
            manifest = verify_part(tar, manifest_path)
            self.seen.add(manifest_path.name)
            run = self.runs.setdefault(manifest.expid, ExposureRun(manifest.expid, manifest.kind, manifest.expnum))
            spec = TaskSpec.from_site(self.site, manifest_path, tar, manifest=manifest,
                                      require_masters=require_masters and manifest.kind == "science")
            spec_path = spec.write(self.specs / f"{tar.stem}.json")
            run.stages.setdefault("submitted", time.time())
            run.jobs += self.executor.map_array(run_task, [str(spec_path)] * len(spec.ccds), range(len(spec.ccds)))
            touched.append(run)
        return touched

    def collect(self, run: ExposureRun) -> None:
        """Wait for an exposure's tasks and fold their timings into its latency stages."""
        run.results = [job.result() for job in run.jobs]
        ok = [r for r in run.results if r["status"] == "ok"]
        run.t_products = max((r.get("finished") or time.time() for r in run.results), default=time.time())
        submitted = run.stages.pop("submitted", None)
        if ok:
            med = {k: float(np.median([r["timings"].get(k, 0.0) for r in ok]))
                   for k in ("stage", "verify", "decompress", "calibrate", "copyback")}
            run.stages["stage"] = med["stage"] + med["verify"] + med["decompress"]
            run.stages["calibrate"] = med["calibrate"]
            run.stages["copyback"] = med["copyback"]
            if submitted is not None:
                run.stages["queue"] = max(0.0, float(np.median([r["started"] for r in ok])) - submitted)


def _journal_stages(journal: Journal, run: ExposureRun) -> None:
    row = journal.exposure(run.expid)
    if row is None:
        return
    run.t_complete = row.t_complete
    if row.t_complete and row.t_packed:
        run.stages["pack"] = row.t_packed - row.t_complete  # includes waiting for a free packer
    if row.t_packed and row.t_delivered:
        run.stages["transfer"] = row.t_delivered - row.t_packed


def _wait(predicate, timeout: float, what: str, poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise DwfError(f"demo: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def run_demo(workdir: Path, *, exposures: int = 4, cadence: float = 20.0, streams: int = 4, biases: int = 2,
             flats: int = 2, codec: str = "rice", ccds: list[int] | None = None, seed: int = 0, say=print,
             timeout: float = 1800.0) -> dict:
    """Simulate a night, push it with the real ``dwfhpc push`` (N rsync streams), calibrate it, report it."""
    workdir = Path(workdir).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    site = load_site("local", workdir=workdir, overrides={"push": {"codec": codec, "streams": streams}})
    raw_dir = site.path(site.push.raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    refcat = workdir / "refcat.fits"
    site.calibration.refcat = str(refcat)
    start = night_start()
    n_ccds = len(ccds) if ccds else 61
    say(f"dwfhpc demo: {biases} biases + {flats} dome flats, then {exposures} science exposures every "
        f"{cadence:g} s, {n_ccds} CCDs each; push --streams {streams} --codec {codec}; workdir {workdir}")
    t0 = time.time()
    push = Push(site, PushOptions(streams=streams, mode="parallel", nbundle=site.push.nbundle, exp_min=0, codec=codec,
                                  parts=site.push.parts, quiet=True, live=False))
    pusher = threading.Thread(target=push.run, name="push", daemon=True)
    pusher.start()
    cluster = Cluster(site)
    journal = Journal(site.path(site.push.journal))
    try:
        # dusk: biases and dome flats, filed into the calibration library by node tasks
        expnum = 1100001
        cal_kinds = ["zero"] * biases + ["dome flat"] * flats
        for i, obstype in enumerate(cal_kinds):
            simulate_decam_exposure(raw_dir, expnum=expnum, obstype=obstype, ccds=ccds, seed=seed,
                                    date_obs=start + timedelta(seconds=30 * i))
            expnum += 1
        _wait(lambda: (cluster.poll(False) or True) and len(cluster.runs) == len(cal_kinds)
              and all(sum(len(read_manifest(m).ccds) for m in cluster.inbox.glob(f"{r.expid}.*.manifest.json"))
                      == n_ccds for r in cluster.runs.values()), timeout, "the calibration frames to arrive")
        for run in cluster.runs.values():
            cluster.collect(run)
            failed = [r for r in run.results if r["status"] != "ok"]
            say(f"  {run.expid} ({run.kind}): {len(run.results) - len(failed)} CCDs filed"
                + (f", {len(failed)} failed: {failed[0]['error']}" if failed else ""))
        night_name = read_manifest(next(cluster.inbox.glob("*.manifest.json"))).night
        masters = build_night_masters(site.path(site.calibration.library), site.path(site.calibration.masters),
                                      night_name, progress=lambda s: None)
        say(f"  masters for night {night_name}: {len(masters)} built")

        # the night: science exposures at the cadence; push and the cluster work as they arrive
        science_ids = [f"DECam_{expnum + i:08d}" for i in range(exposures)]

        def telescope() -> None:
            for i in range(exposures):
                if i:
                    time.sleep(cadence)
                simulate_decam_exposure(raw_dir, expnum=expnum + i, ccds=ccds, seed=seed,
                                        date_obs=start + timedelta(hours=1, seconds=cadence * i),
                                        catalog_out=refcat if i == 0 else None)

        sim = threading.Thread(target=telescope, name="telescope", daemon=True)
        sim.start()
        announced: set[str] = set()

        def science_submitted() -> bool:
            for run in cluster.poll(True):
                if run.expid not in announced and run.kind == "science":
                    announced.add(run.expid)
                    say(f"  {run.expid}: parts arriving in the inbox, arrays submitted")
            return all(e in cluster.runs and len(cluster.runs[e].jobs) == n_ccds for e in science_ids)

        _wait(science_submitted, timeout, "the science exposures to be delivered")
        for expid in science_ids:
            run = cluster.runs[expid]
            cluster.collect(run)
            _journal_stages(journal, run)
            ok = sum(r["status"] == "ok" for r in run.results)
            say(f"  {run.expid}: {ok}/{len(run.results)} CCDs calibrated, "
                f"latency {run.t_products - run.t_complete:.1f} s from file complete to products")
        sim.join()
    finally:
        push.request_stop()
        pusher.join(timeout=60)
    for run in cluster.runs.values():
        _journal_stages(journal, run)
    summary = _summarise(site, list(cluster.runs.values()), night_name, workdir, n_ccds)
    say(summary["table"])
    say(f"report: {summary['report']}   ({time.time() - t0:.0f} s in all)")
    return summary


def _summarise(site: SiteSettings, runs: list[ExposureRun], night_name: str, workdir: Path, n_ccds: int) -> dict:
    exposures, ccds = [], []
    for run in runs:
        qa = [r.get("qa", {}) for r in run.results if r["status"] == "ok"]
        fwhm = [q["fwhm_arcsec"] for q in qa if q.get("fwhm_arcsec")]
        exposures.append(ExposureRecord(
            expid=run.expid, expnum=run.expnum, kind=run.kind, filter="g" if run.kind != "bias" else "",
            field=qa[0].get("field", "") if qa else "", n_ccds=len(run.results),
            n_done=sum(r["status"] == "ok" for r in run.results), t_complete=run.t_complete, t_products=run.t_products,
            stages={k: v for k, v in run.stages.items() if k in STAGES},
            fwhm=float(np.median(fwhm)) if fwhm else None,
            sky=float(np.median([q["sky"] for q in qa])) if qa and "sky" in qa[0] else None,
            nsources=float(np.median([q["n_sources"] for q in qa])) if qa and "n_sources" in qa[0] else None))
        for r in run.results:
            q = r.get("qa", {})
            ccds.append(CCDRecord(run.expid, r.get("ccd", -1), "done" if r["status"] == "ok" else "failed", 1,
                                  r.get("error"), fwhm=q.get("fwhm_arcsec"), sky=q.get("sky"),
                                  nsources=q.get("n_sources"), wcs_status=(r.get("wcs") or {}).get("status")))
    data = NightData(night_name, "decam", exposures, ccds)
    report = write_report(data, workdir / "report")
    science = [e for e in exposures if e.kind == "science"]
    science_ccds = [c for c in ccds if c.expid in {e.expid for e in science}]
    lat = [e.latency for e in science if e.latency is not None]
    lost = n_ccds * len(science) - len(science_ccds)  # expected CCDs that never produced a result
    lines = [
        "",
        f"night {night_name}: {len(science)} science exposures, {sum(c.state == 'done' for c in science_ccds)} CCDs "
        f"calibrated, {sum(c.state == 'failed' for c in science_ccds)} failed, {lost} lost",
        "latency from file complete to products (s):",
        f"  {'':10s} {'p50':>7s} {'p95':>7s}",
        f"  {'total':10s} {percentile(lat, 50):7.1f} {percentile(lat, 95):7.1f}",
    ]
    for stage in STAGES:
        values = [e.stages.get(stage, 0.0) for e in science]
        lines.append(f"  {stage:10s} {percentile(values, 50):7.1f} {percentile(values, 95):7.1f}")
    table = "\n".join(lines)
    (workdir / "summary.json").write_text(json.dumps({
        "night": night_name, "exposures": len(science),
        "calibrated": sum(c.state == "done" for c in science_ccds),
        "failed": sum(c.state == "failed" for c in science_ccds), "lost": lost,
        "latency_p50": percentile(lat, 50), "latency_p95": percentile(lat, 95)}, indent=1))
    return {"table": table, "report": report, "exposures": exposures, "ccds": ccds}
