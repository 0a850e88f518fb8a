"""``dwfhpc demo``: a simulated night through the toolkit on this machine.

Biases and dome flats first, then science exposures appearing in the telescope's raw folder at a
cadence. Each complete exposure is packed into parts, carried into the cluster inbox by real
rsync processes (N streams), verified, and calibrated as one job array per part through
submitit's LocalExecutor (node tasks stage through scratch exactly as on a cluster). Masters are
built from the night's calibration frames once they are filed. Ends with the latency table
(file complete -> products) broken down by stage, and the night report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import submitit

from .calibrate import build_night_masters
from .config import SiteSettings, load_site
from .errors import DwfError
from .layout import manifest_for_tar
from .node import TaskSpec, run_task
from .parts import Part, pack_exposure, read_manifest, verify_part
from .report import STAGES, CCDRecord, ExposureRecord, NightData, percentile, write_report
from .simulate import night_start, simulate_decam_exposure


@dataclass
class ExposureRun:
    path: Path
    kind: str
    t_complete: float
    expid: str = ""
    expnum: int = 0
    stages: dict[str, float] = field(default_factory=dict)
    results: list[dict] = field(default_factory=list)
    t_products: float | None = None


def _rsync(src: Path, staging: Path, inbox: Path) -> None:
    """Deliver one file with rsync into staging, then move it into the inbox (atomic)."""
    staging.mkdir(parents=True, exist_ok=True)
    inbox.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["rsync", "-a", "--partial-dir=.rsync-partial", str(src), f"{staging}/"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise DwfError(f"rsync failed ({proc.returncode}): {proc.stderr.strip()}", src)
    os.replace(staging / src.name, inbox / src.name)


class Night:
    """The demo's driver: simulate, push, ingest, calibrate, collect."""

    def __init__(self, site: SiteSettings, *, streams: int, codec: str, ccds: list[int] | None, say=print):
        self.site = site
        self.streams = streams
        self.codec = codec
        self.ccds = ccds
        self.say = say
        self.raw_dir = site.path(site.push.raw_dir)
        self.outgoing = site.path(site.push.outgoing_dir)
        self.staging = site.path(site.transport.staging)
        self.inbox = site.path(site.ingest.inbox)
        self.specs = site.path(site.ingest.specs)
        self.jobs_dir = site.path(site.ingest.jobs_dir)
        self.executor = submitit.LocalExecutor(folder=self.jobs_dir / "%j")
        self.executor.update_parameters(timeout_min=site.scheduler.time_minutes)
        self.transfer_pool = ThreadPoolExecutor(max_workers=streams)

    def deliver(self, run: ExposureRun) -> list[Part]:
        t = time.time()
        parts = pack_exposure(run.path, self.outgoing, codec=self.codec, parts=self.site.push.parts,
                              jobs=self.site.push.jobs)
        run.stages["pack"] = time.time() - t
        run.expid = parts[0].expid
        t = time.time()
        futures = [self.transfer_pool.submit(_rsync, p.tar, self.staging, self.inbox) for p in parts]
        for f in futures:
            f.result()
        # manifests last: a part is visible to the receiver only when its manifest is there
        for f in [self.transfer_pool.submit(_rsync, p.manifest, self.staging, self.inbox) for p in parts]:
            f.result()
        run.stages["transfer"] = time.time() - t
        for p in parts:
            p.tar.unlink()
            p.manifest.unlink()
        return [Part(p.expid, p.k, p.n, self.inbox / p.tar.name, self.inbox / p.manifest.name) for p in parts]

    def submit(self, run: ExposureRun, parts: list[Part], require_masters: bool) -> list:
        jobs = []
        for p in parts:
            manifest = verify_part(p.tar, p.manifest)
            spec = TaskSpec.from_site(self.site, p.manifest, p.tar, manifest=manifest, require_masters=require_masters)
            spec_path = spec.write(self.specs / f"{p.tar.stem}.json")
            jobs += self.executor.map_array(run_task, [str(spec_path)] * len(spec.ccds), range(len(spec.ccds)))
        run.stages["submitted"] = time.time()
        return jobs

    def collect(self, run: ExposureRun, jobs: list) -> None:
        for job in jobs:
            run.results.append(job.result())
        run.t_products = max((r.get("finished", time.time()) for r in run.results), default=time.time())
        ok = [r for r in run.results if r["status"] == "ok"]
        for stage in ("stage", "decompress", "calibrate", "copyback"):
            values = [r["timings"].get(stage, 0.0) for r in ok]
            if values:
                run.stages[stage if stage != "decompress" else "stage"] = run.stages.get(
                    stage if stage != "decompress" else "stage", 0.0) + float(np.median(values))
        starts = [r["started"] for r in run.results]
        if starts:
            run.stages["queue"] = max(0.0, float(np.median(starts)) - run.stages.pop("submitted"))


def run_demo(workdir: Path, *, exposures: int = 4, cadence: float = 20.0, streams: int = 4, biases: int = 2,
             flats: int = 2, codec: str = "rice", ccds: list[int] | None = None, seed: int = 0, say=print) -> dict:
    workdir = Path(workdir).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    site = load_site("local", workdir=workdir)
    night = Night(site, streams=streams, codec=codec, ccds=ccds, say=say)
    night.raw_dir.mkdir(parents=True, exist_ok=True)
    refcat = workdir / "refcat.fits"
    site.calibration.refcat = str(refcat)
    start = night_start()
    expnum = 1100001
    runs: list[ExposureRun] = []
    t0 = time.time()
    say(f"dwfhpc demo: {biases} biases + {flats} dome flats, then {exposures} science exposures every "
        f"{cadence:g} s, {len(ccds) if ccds else 61} CCDs each, {streams} streams, codec {codec}, workdir {workdir}")

    # dusk: calibration frames
    for i, obstype in enumerate(["zero"] * biases + ["dome flat"] * flats):
        path = simulate_decam_exposure(night.raw_dir, expnum=expnum, obstype=obstype, ccds=ccds, seed=seed,
                                       date_obs=start + timedelta(seconds=30 * i))
        runs.append(ExposureRun(path, "bias" if obstype == "zero" else "flat", time.time(), expnum=expnum))
        expnum += 1
    cal_jobs = []
    for run in runs:
        parts = night.deliver(run)
        cal_jobs.append((run, night.submit(run, parts, require_masters=False)))
    for run, jobs in cal_jobs:
        night.collect(run, jobs)
        failed = [r for r in run.results if r["status"] != "ok"]
        say(f"  {run.expid} ({run.kind}): {len(run.results) - len(failed)} CCDs filed"
            + (f", {len(failed)} failed: {failed[0]['error']}" if failed else ""))
    night_name = read_manifest(next(night.inbox.glob("*.manifest.json"))).night
    masters = build_night_masters(site.path(site.calibration.library), site.path(site.calibration.masters),
                                  night_name, progress=lambda s: None)
    say(f"  masters for night {night_name}: {len(masters)} built")

    # the night: science exposures at the cadence, each processed as soon as it is complete
    science: list[ExposureRun] = []
    arrived: list[tuple[Path, float, int]] = []
    lock = threading.Condition()

    def telescope() -> None:
        n = expnum
        for i in range(exposures):
            if i:
                time.sleep(cadence)
            path = simulate_decam_exposure(night.raw_dir, expnum=n, ccds=ccds, seed=seed,
                                           date_obs=start + timedelta(hours=1, seconds=cadence * i),
                                           catalog_out=refcat if i == 0 else None)
            with lock:
                arrived.append((path, time.time(), n))
                lock.notify()
            n += 1

    sim = threading.Thread(target=telescope, daemon=True)
    sim.start()
    pending = []
    while len(science) < exposures:
        with lock:
            while len(arrived) <= len(science):
                lock.wait(timeout=1.0)
            path, t_complete, n = arrived[len(science)]
        run = ExposureRun(path, "science", t_complete, expnum=n)
        science.append(run)
        parts = night.deliver(run)
        pending.append((run, night.submit(run, parts, require_masters=True)))
        say(f"  {run.expid}: complete -> {len(parts)} parts delivered and submitted "
            f"(pack {run.stages['pack']:.1f} s, transfer {run.stages['transfer']:.1f} s)")
    for run, jobs in pending:
        night.collect(run, jobs)
        ok = sum(r["status"] == "ok" for r in run.results)
        say(f"  {run.expid}: {ok}/{len(run.results)} CCDs calibrated, latency {run.t_products - run.t_complete:.1f} s")
    sim.join()
    summary = _summarise(site, runs + science, night_name, workdir)
    say(summary["table"])
    say(f"report: {summary['report']}   ({time.time() - t0:.0f} s in all)")
    return summary


def _summarise(site: SiteSettings, runs: list[ExposureRun], night_name: str, workdir: Path) -> dict:
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
    expected = sum(len(read_manifest(m).ccds) for m in site.path(site.ingest.inbox).glob("*.manifest.json")
                   if read_manifest(m).kind == "science")
    lost = expected - len(science_ccds)
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
