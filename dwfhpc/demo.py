"""``dwfhpc demo``: a simulated night through the whole toolkit on this machine, DECam or HSC.

Three threads, the same code an observer and a cluster run: the *telescope* writes biases and
dome flats at dusk, then science exposures into the raw folder at a cadence (DECam: one MEF per
exposure; HSC: one file per CCD, written one after the other as the camera does, which push groups
into a visit by EXP-ID); ``dwfhpc push`` (watcher, packing pool, N rsync streams, journal) carries
each complete exposure's parts into the cluster inbox; ``dwfhpc ingest --array`` verifies them,
submits one job array per part (submitit's LocalExecutor by default, the Slurm executor with
``--executor slurm``), files the calibration frames, builds the night's masters, and collects every
CCD's result into the state DB. The summary (science and calibration CCDs counted apart, latency
from file complete to products by stage) and the night report are made from that state DB, with the
same counting as ``dwfhpc status`` (:func:`dwfhpc.report.counts.ccd_counts`).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from .config import SiteSettings, load_site
from .errors import DwfError
from .ingest import Ingest, IngestOptions
from .instruments import HSC
from .push import Push, PushOptions
from .report import STAGES, percentile
from .report.collect import night_data
from .report.counts import GROUPS, LABELS, ccd_counts, counts_dict, promised_ccds
from .simulate import (make_star_catalog, night_start, simulate_decam_exposure, simulate_hsc_visit,
                       write_star_catalog)
from .statedb import FINAL, StateDB
from .states import PartState, TaskState

HSC_POINTING = (320.25, 0.0)  # the field of the real HSC header (STRIPE82L)
HSC_FIRST_VISIT = 240000  # HSC visits are even numbers


@dataclass(frozen=True)
class NightPlan:
    """What the telescope takes: calibration frames then science, with their exposure ids."""

    instrument: str
    cal_kinds: list[str]  # obstypes: zero | dome flat
    numbers: list[int]  # expnum (DECam) or visit (HSC) of every exposure, calibrations first
    ccds: list[int]

    @property
    def ids(self) -> list[str]:
        return [f"DECam_{n:08d}" if self.instrument == "decam" else f"HSC_{n:07d}" for n in self.numbers]

    @property
    def science_ids(self) -> list[str]:
        return self.ids[len(self.cal_kinds):]


DEFAULTS = {  # sizes that fit a 2-core machine in a few minutes
    "decam": {"exposures": 4, "ccds": list(range(1, 9))},
    "hsc": {"exposures": 3, "ccds": [41, 42, 49, 50]},  # four CCDs around the optical axis
}


def plan_night(instrument: str, *, exposures: int, biases: int, flats: int, ccds: list[int]) -> NightPlan:
    cal_kinds = ["zero"] * biases + ["dome flat"] * flats
    n = len(cal_kinds) + exposures
    if instrument == "decam":
        numbers = [1100001 + i for i in range(n)]
    elif instrument == "hsc":
        numbers = [HSC_FIRST_VISIT + 2 * i for i in range(n)]
        unknown = [c for c in ccds if c not in HSC.science_ccds or c in HSC.bad_ccds]
        if unknown:
            raise DwfError(f"no HSC science CCD {unknown} (DET-IDs 0-103, without the dead CCD 9)")
    else:
        raise DwfError(f"demo: unknown instrument {instrument!r} (decam or hsc)")
    return NightPlan(instrument, cal_kinds, numbers, list(ccds))


def check_backend(instrument: str, backend: str, *, image: str | None, hscpipe_repo: str | None,
                  apptainer: str = "apptainer") -> None:
    """Refuse, in one line, a backend this machine cannot run, before anything is simulated."""
    if backend == "embedded":
        return
    if backend != "hscpipe":
        raise DwfError(f"demo: unknown backend {backend!r} (embedded or hscpipe)")
    if instrument != "hsc":
        raise DwfError("demo: --backend hscpipe is HSC's pipeline; add --instrument hsc")
    missing = []
    if not shutil.which(apptainer):
        missing.append(f"{apptainer} (not on PATH)")
    if not image:
        missing.append("--image (the hscpipe image, hscpipe.sif: `dwfhpc image build hscpipe`)")
    elif not Path(image).is_file():
        missing.append(f"--image {image} (no such file)")
    if not hscpipe_repo:
        missing.append("--hscpipe-repo (a butler repo whose CALIB holds master bias and flats, with ref_cats)")
    elif not Path(hscpipe_repo).is_dir():
        missing.append(f"--hscpipe-repo {hscpipe_repo} (no such folder)")
    if missing:
        raise DwfError("demo --backend hscpipe needs " + "; ".join(missing))


def demo_site(workdir: Path, *, codec: str, streams: int, executor: str, instrument: str = "decam",
              backend: str = "embedded", image: str | None = None, hscpipe_repo: str | None = None,
              workers: int | None = None) -> SiteSettings:
    """The embedded default (``configs/local.yaml``) on ``workdir``, report in ``workdir/report``.

    HSC: push closes a visit 2 s after its last CCD file (the simulated camera writes a visit's
    files within a second; the shipped 30 s is for the real one). ``workers``: warm workers (None: the
    config's ``ingest.workers``; 0: one job array per part).
    """
    node: dict = {"backend": backend}
    if image:
        node["image"] = str(Path(image).resolve())
    if hscpipe_repo:
        node["hscpipe_repo"] = str(Path(hscpipe_repo).resolve())
    site = load_site("local", workdir=workdir, overrides={
        "instrument": instrument, "node": node,
        "push": {"codec": codec, "streams": streams, "visit_quiet_seconds": 2.0},
        # the live report is re-rendered in ingest's loop (seconds of matplotlib); the demo writes the last one
        "ingest": {"executor": executor, "report_dir": "report", "report_every_seconds": 60,
                   **({} if workers is None else {"workers": workers})}})
    site.calibration.refcat = str(workdir / "refcat.fits")
    return site


def _finished(db: StateDB, expid: str, default: int) -> bool:
    """Every CCD the exposure's manifest promises (``default`` before any part arrived) is final.

    A manifest not readable this poll (the ingest is moving it into the parts store) means "not
    yet": the next poll looks again.
    """
    parts = [p for p in db.parts() if p.expid == expid and p.state != PartState.QUARANTINED]
    expected = promised_ccds(parts[0]) if parts else default
    if expected is None:
        return False
    tasks = db.tasks(expid=expid)
    return len(tasks) >= expected and all(t.state in FINAL for t in tasks)


class Worker(threading.Thread):
    """A daemon thread that keeps the exception that ended it, for the main thread to report."""

    def __init__(self, name: str, target=None):
        super().__init__(name=name, daemon=True)
        self._work = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work()
        except BaseException as exc:
            self.error = exc

    def work(self) -> None:
        self._work()


class Telescope(Worker):
    """Writes the night's raw files: calibration frames at dusk, then science at the cadence."""

    def __init__(self, raw_dir: Path, plan: NightPlan, cadence: float, seed: int, refcat: Path):
        super().__init__("telescope")
        self.raw_dir, self.plan, self.cadence, self.seed, self.refcat = raw_dir, plan, cadence, seed, refcat
        self.stop = threading.Event()

    def work(self) -> None:
        plan = self.plan
        hsc = plan.instrument == "hsc"
        start = night_start(longitude=HSC.longitude) if hsc else night_start()
        ncal = len(plan.cal_kinds)
        for i, obstype in enumerate(plan.cal_kinds):
            self.take(plan.numbers[i], obstype, start + timedelta(seconds=30 * i), first_science=False)
        for i, number in enumerate(plan.numbers[ncal:]):
            if i and self.stop.wait(self.cadence):
                return
            self.take(number, "object", start + timedelta(hours=1, seconds=self.cadence * i), first_science=i == 0)

    def take(self, number: int, obstype: str, when, *, first_science: bool) -> None:
        if self.plan.instrument == "decam":
            simulate_decam_exposure(self.raw_dir, expnum=number, obstype=obstype, ccds=self.plan.ccds,
                                    seed=self.seed, date_obs=when, catalog_out=self.refcat if first_science else None)
            return
        if first_science:  # the same stars the simulator puts in the field (fixed by the pointing)
            write_star_catalog(self.refcat, make_star_catalog(*HSC_POINTING, radius_deg=0.9))
        # one file per CCD, each appearing whole under its final name, one after the other
        simulate_hsc_visit(self.raw_dir, visit=number, ccds=self.plan.ccds, obstype=obstype, seed=self.seed,
                           ra=HSC_POINTING[0], dec=HSC_POINTING[1], date_obs=when)


def run_demo(workdir: Path, *, instrument: str = "decam", exposures: int | None = None, cadence: float = 20.0,
             streams: int = 4, biases: int = 2, flats: int = 2, codec: str = "auto", ccds: list[int] | None = None,
             seed: int = 0, executor: str = "local", workers: int | None = None, backend: str = "embedded",
             image: str | None = None, hscpipe_repo: str | None = None, say=print, timeout: float = 1800.0) -> dict:
    """Simulate a night; push it (N rsync streams), ingest it on warm workers (or as job arrays), report it.
    Returns the summary."""
    if instrument not in DEFAULTS:
        raise DwfError(f"demo: unknown instrument {instrument!r} (decam or hsc)")
    check_backend(instrument, backend, image=image, hscpipe_repo=hscpipe_repo)
    exposures = DEFAULTS[instrument]["exposures"] if exposures is None else exposures
    ccds = list(ccds) if ccds else list(DEFAULTS[instrument]["ccds"])
    plan = plan_night(instrument, exposures=exposures, biases=biases, flats=flats, ccds=ccds)
    workdir = Path(workdir).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    site = demo_site(workdir, codec=codec, streams=streams, executor=executor, instrument=instrument,
                     backend=backend, image=image, hscpipe_repo=hscpipe_repo, workers=workers)
    mode = f"--workers {site.ingest.workers}" if site.ingest.workers else "--array"
    raw_dir = site.path(site.push.raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    what = ("exposures" if instrument == "decam" else "visits (one file per CCD)")
    say(f"dwfhpc demo --instrument {instrument}: {biases} biases + {flats} dome flats, then {exposures} science "
        f"{what} every {cadence:g} s, CCDs {','.join(map(str, ccds))}; push --streams {streams} --codec {codec}; "
        f"ingest {mode} --executor {executor}, backend {backend}; workdir {workdir}")
    t0 = time.time()
    ingest = Ingest(site, IngestOptions(executor=executor, report=True))
    push = Push(site, PushOptions(streams=streams, mode="parallel", nbundle=site.push.nbundle, exp_min=0, codec=codec,
                                  parts=site.push.parts, quiet=True, live=False))
    telescope = Telescope(raw_dir, plan, cadence, seed, Path(site.calibration.refcat))
    threads = [Worker("push", push.run), Worker("ingest", ingest.run)]
    for t in threads:
        t.start()
    telescope.start()
    try:
        _follow(ingest.db, plan.ids, len(ccds), [telescope, *threads], say, timeout,
                "CCDs queued for the warm workers" if site.ingest.workers else "arrays queued")
    finally:
        telescope.stop.set()
        push.request_stop()
        ingest.request_stop()
        for t in threads:
            t.join(timeout=120)
        ingest.close()
    with StateDB(site.path(site.ingest.state_db)) as db:
        summary = summarise(site, db, plan.science_ids, workdir, instrument=instrument)
    elapsed = time.time() - t0
    say(summary["table"])
    say(f"report: {summary['report']}   state: {site.path(site.ingest.state_db)}   ({elapsed:.0f} s in all)")
    return {**summary, "seconds": elapsed}


def _follow(db: StateDB, expids: list[str], n_ccds: int, workers: list[Worker], say, timeout: float,
            queued_as: str = "arrays queued") -> None:
    """Say what happens as it happens; return once every exposure's CCDs are final."""
    deadline = time.monotonic() + timeout
    announced: set[str] = set()
    finished: set[str] = set()
    last_line = 0.0
    while len(finished) < len(expids):
        for w in workers:
            if w.error is not None:
                raise DwfError(f"demo: {w.name} stopped: {w.error}") from w.error
            if w.name != "telescope" and not w.is_alive():
                raise DwfError(f"demo: {w.name} stopped early (see the log above)")
        for expid in expids:
            if expid not in announced and any(p.expid == expid for p in db.parts()):
                announced.add(expid)
                say(f"  {expid}: delivered, verified, {queued_as}")
            if expid not in finished and expid in announced and _finished(db, expid, n_ccds):
                finished.add(expid)
                tasks = db.tasks(expid=expid)
                done = sum(t.state == TaskState.DONE for t in tasks)
                bad = [t for t in tasks if t.state != TaskState.DONE]
                say(f"  {expid} ({tasks[0].kind}): {done}/{len(tasks)} CCDs "
                    f"{'filed' if tasks[0].kind != 'science' else 'calibrated'}"
                    + (f"; {len(bad)} {bad[0].state}: {bad[0].reason}" if bad else ""))
        now = time.monotonic()
        if now - last_line > 15:
            counts = db.counts("tasks")
            say("  ... tasks " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none yet"))
            last_line = now
        if now > deadline:
            missing = [e for e in expids if e not in finished]
            raise DwfError(f"demo: timed out after {timeout:.0f} s; not finished: {', '.join(missing)}")
        time.sleep(0.5)


def summarise(site: SiteSettings, db: StateDB, science_ids: list[str], workdir: Path, *,
              instrument: str = "decam") -> dict:
    """The counts, the latency table and summary.json, from the state DB; the night report beside them.

    Counts are :func:`~dwfhpc.report.counts.ccd_counts` over the whole night, exactly what ``dwfhpc
    status`` and the report's header show: science CCDs and calibration CCDs, never added together.
    """
    from .report.render import write_report

    night = next((p.night for p in db.parts() if p.night), None)
    if night is None:
        raise DwfError("demo: nothing reached the cluster")
    data = night_data(site, db, night)
    report = write_report(data, site.path(site.ingest.report_dir))
    counts = ccd_counts(db, night)
    sci = counts["science"]
    science = [e for e in data.exposures if e.expid in science_ids]
    lat = [e.latency for e in science if e.latency is not None]
    lines = ["", f"night {night} ({instrument}): {len(science_ids)} science exposures",
             *(f"  {counts[g].phrase(LABELS[g])}" for g in GROUPS),
             "latency from file complete to products, science exposures (s):",
             f"  {'':10s} {'p50':>7s} {'p95':>7s}", f"  {'total':10s} {percentile(lat, 50):7.1f} {percentile(lat, 95):7.1f}"]
    for stage in STAGES:
        values = [e.stages.get(stage, 0.0) for e in science]
        lines.append(f"  {stage:10s} {percentile(values, 50):7.1f} {percentile(values, 95):7.1f}")
    summary = {"night": night, "instrument": instrument, "exposures": len(science_ids),
               # the science CCDs, flat, as before; "ccds" has both groups
               "calibrated": sci.calibrated, "failed": sci.failed, "lost": sci.lost, "in_flight": sci.in_flight,
               "ccds": counts_dict(counts),
               "latency_p50": percentile(lat, 50), "latency_p95": percentile(lat, 95),
               "stages_p50": {s: percentile([e.stages.get(s, 0.0) for e in science], 50) for s in STAGES},
               "report": str(report), "state_db": str(site.path(site.ingest.state_db))}
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    return {**summary, "table": "\n".join(lines), "data": data}
