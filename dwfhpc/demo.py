"""``dwfhpc demo``: a simulated night through the whole toolkit on this machine.

Three threads, the same code an observer and a cluster run: the *telescope* writes biases and
dome flats at dusk, then science exposures into the raw folder at a cadence; ``dwfhpc push``
(watcher, packing pool, N rsync streams, journal) carries each complete exposure's parts into
the cluster inbox; ``dwfhpc ingest --array`` verifies them, submits one job array per part
(submitit's LocalExecutor by default, the Slurm executor with ``--executor slurm``), files the
calibration frames, builds the night's masters, and collects every CCD's result into the state
DB. The summary (latency from file complete to products by stage, 0 lost) and the night report
are made from that state DB, exactly as ``dwfhpc status`` and ``dwfhpc report`` see it.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

from .config import SiteSettings, load_site
from .errors import DwfError
from .ingest import Ingest, IngestOptions
from .parts import read_manifest
from .push import Push, PushOptions
from .report import STAGES, percentile
from .report.collect import night_data
from .simulate import night_start, simulate_decam_exposure
from .state import FINAL, StateDB


def demo_site(workdir: Path, *, codec: str, streams: int, executor: str) -> SiteSettings:
    """The embedded default (``configs/local.yaml``) on ``workdir``, report in ``workdir/report``."""
    site = load_site("local", workdir=workdir, overrides={
        "push": {"codec": codec, "streams": streams}, "ingest": {"executor": executor, "report_dir": "report",
                                                                 "report_every_seconds": 15}})
    site.calibration.refcat = str(workdir / "refcat.fits")
    return site


def _expected_ccds(db: StateDB, expid: str, default: int) -> int:
    parts = [p for p in db.parts() if p.expid == expid and p.state != "quarantined"]
    if not parts:
        return default
    return len(read_manifest(parts[0].manifest).ccds_in_exposure)


def _finished(db: StateDB, expid: str, default: int) -> bool:
    tasks = db.tasks(expid=expid)
    return len(tasks) >= _expected_ccds(db, expid, default) and all(t.state in FINAL for t in tasks)


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

    def __init__(self, raw_dir: Path, cal_kinds: list[str], science: list[int], cadence: float, ccds, seed: int,
                 refcat: Path):
        super().__init__("telescope")
        self.raw_dir, self.cal_kinds, self.science, self.cadence = raw_dir, cal_kinds, science, cadence
        self.ccds, self.seed, self.refcat = ccds, seed, refcat
        self.stop = threading.Event()

    def work(self) -> None:
        start = night_start()
        expnum = self.science[0] - len(self.cal_kinds)
        for i, obstype in enumerate(self.cal_kinds):
            simulate_decam_exposure(self.raw_dir, expnum=expnum + i, obstype=obstype, ccds=self.ccds,
                                    seed=self.seed, date_obs=start + timedelta(seconds=30 * i))
        for i, expnum in enumerate(self.science):
            if i and self.stop.wait(self.cadence):
                return
            simulate_decam_exposure(self.raw_dir, expnum=expnum, ccds=self.ccds, seed=self.seed,
                                    date_obs=start + timedelta(hours=1, seconds=self.cadence * i),
                                    catalog_out=self.refcat if i == 0 else None)


def run_demo(workdir: Path, *, exposures: int = 4, cadence: float = 20.0, streams: int = 4, biases: int = 2,
             flats: int = 2, codec: str = "rice", ccds: list[int] | None = None, seed: int = 0,
             executor: str = "local", say=print, timeout: float = 1800.0) -> dict:
    """Simulate a night; push it (N rsync streams), ingest it as job arrays, report it. Returns the summary."""
    workdir = Path(workdir).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    site = demo_site(workdir, codec=codec, streams=streams, executor=executor)
    raw_dir = site.path(site.push.raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    n_ccds = len(ccds) if ccds else 61
    first_science = 1100001 + biases + flats
    cal_kinds = ["zero"] * biases + ["dome flat"] * flats
    all_ids = [f"DECam_{1100001 + i:08d}" for i in range(len(cal_kinds) + exposures)]
    science_ids = all_ids[len(cal_kinds):]
    say(f"dwfhpc demo: {biases} biases + {flats} dome flats, then {exposures} science exposures every "
        f"{cadence:g} s, {n_ccds} CCDs each; push --streams {streams} --codec {codec}; "
        f"ingest --array --executor {executor}; workdir {workdir}")
    t0 = time.time()
    ingest = Ingest(site, IngestOptions(executor=executor, report=True))
    push = Push(site, PushOptions(streams=streams, mode="parallel", nbundle=site.push.nbundle, exp_min=0, codec=codec,
                                  parts=site.push.parts, quiet=True, live=False))
    telescope = Telescope(raw_dir, cal_kinds, list(range(first_science, first_science + exposures)), cadence, ccds,
                          seed, Path(site.calibration.refcat))
    threads = [Worker("push", push.run), Worker("ingest", ingest.run)]
    for t in threads:
        t.start()
    telescope.start()
    try:
        _follow(ingest.db, all_ids, n_ccds, [telescope, *threads], say, timeout)
    finally:
        telescope.stop.set()
        push.request_stop()
        ingest.request_stop()
        for t in threads:
            t.join(timeout=120)
        ingest.close()
    with StateDB(site.path(site.ingest.state_db)) as db:
        summary = summarise(site, db, science_ids, n_ccds, workdir)
    say(summary["table"])
    say(f"report: {summary['report']}   state: {site.path(site.ingest.state_db)}   ({time.time() - t0:.0f} s in all)")
    return summary


def _follow(db: StateDB, expids: list[str], n_ccds: int, workers: list[Worker], say, timeout: float) -> None:
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
                say(f"  {expid}: delivered, verified, arrays queued")
            if expid not in finished and expid in announced and _finished(db, expid, n_ccds):
                finished.add(expid)
                tasks = db.tasks(expid=expid)
                done = sum(t.state == "done" for t in tasks)
                bad = [t for t in tasks if t.state != "done"]
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


def summarise(site: SiteSettings, db: StateDB, science_ids: list[str], n_ccds: int, workdir: Path) -> dict:
    """The latency table and summary.json, from the state DB; the night report beside them."""
    from .report.render import write_report

    night = next((p.night for p in db.parts() if p.night), None)
    if night is None:
        raise DwfError("demo: nothing reached the cluster")
    data = night_data(site, db, night)
    report = write_report(data, site.path(site.ingest.report_dir))
    science = [e for e in data.exposures if e.expid in science_ids]
    ccds = [c for c in data.ccds if c.expid in science_ids]
    expected = sum(_expected_ccds(db, e, n_ccds) for e in science_ids)
    calibrated = sum(c.state == "done" for c in ccds)
    failed = sum(c.state == "failed" for c in ccds)
    lost = expected - calibrated - failed  # expected CCDs with no final result (incl. tasks marked lost)
    lat = [e.latency for e in science if e.latency is not None]
    lines = ["", f"night {night}: {len(science_ids)} science exposures, {calibrated} CCDs calibrated, {failed} failed, "
                 f"{lost} lost", "latency from file complete to products (s):",
             f"  {'':10s} {'p50':>7s} {'p95':>7s}", f"  {'total':10s} {percentile(lat, 50):7.1f} {percentile(lat, 95):7.1f}"]
    for stage in STAGES:
        values = [e.stages.get(stage, 0.0) for e in science]
        lines.append(f"  {stage:10s} {percentile(values, 50):7.1f} {percentile(values, 95):7.1f}")
    summary = {"night": night, "exposures": len(science_ids), "calibrated": calibrated, "failed": failed, "lost": lost,
               "latency_p50": percentile(lat, 50), "latency_p95": percentile(lat, 95),
               "stages_p50": {s: percentile([e.stages.get(s, 0.0) for e in science], 50) for s in STAGES},
               "report": str(report), "state_db": str(site.path(site.ingest.state_db))}
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    return {**summary, "table": "\n".join(lines), "data": data}
