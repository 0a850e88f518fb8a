"""``dwfhpc ingest``: the cluster-side loop: inbox -> masters -> submit -> collect -> report.

Two cadences: the inbox is scanned every ``inbox_poll_seconds`` (a directory listing; each verified
part is submitted at once), the scheduler is asked about our tasks every ``poll_seconds`` (one
status query for all of them), so a short inbox cadence costs the scheduler nothing.

What ingest logs about a part (``extra={"part": stem}``) and every warning or error is also
recorded in the state DB's events table (:class:`dwfhpc.db.EventHandler`, installed for the
``dwfhpc.ingest`` loggers while the ingest is open), so each message is written once.

Everything lives in the state DB, so a killed ingest restarts where it was: parts already
verified are not verified again, submitted tasks are not submitted again, and running arrays are
re-attached by the task ids the DB recorded (results are files beside the specs; the queue is
one query), so nothing is lost and nothing runs twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import SiteSettings
from ..locking import RESTART_WAIT_SECONDS, FileLock
from ..db import install_event_handler, remove_event_handler
from ..statedb import StateDB
from ..states import TASK_ACTIVE, TaskState
from .collector import Collector
from .executors import ArrayExecutor, make_executor
from .inbox import Inbox
from .masters import MastersKeeper
from .submitter import Submitter
from .throttle import Throttle

log = logging.getLogger(__name__)


class IngestOptions:
    """How this run behaves; what it runs with is ``site.ingest`` (the command line sets it through
    ``load_site(..., overrides={"ingest": ...})``).

    Library callers that hold a loaded site may also give ingest settings here (``executor="slurm",
    max_jobs=8``): those not None replace ``site.ingest``'s before anything reads them.
    """

    def __init__(self, *, report: bool = True, **settings: Any):
        self.report = report
        self.settings = {k: v for k, v in settings.items() if v is not None}


@dataclass
class Step:
    """One poll of :meth:`Ingest.run`, as its ``observer`` is told about it."""

    counts: dict[str, int]  # what :meth:`Ingest.step` returns: accepted, quarantined, waiting, submitted, collected ...
    started: float  # time.time() when the inbox scan began
    accepted: list[str] = field(default_factory=list)  # parts verified and queued by this scan, in order
    collected: tuple[float, float] | None = None  # start and end (time.time()) of the scheduler poll, if there was one


class Ingest:
    """One running ingest. ``step()`` is one poll; ``run()`` polls until stopped (or drained)."""

    def __init__(self, site: SiteSettings, opts: IngestOptions | None = None, *, executor: ArrayExecutor | None = None):
        self.opts = opts or IngestOptions()
        site = self.site = site.with_changes("ingest", self.opts.settings)
        ing = site.ingest
        self.state_path = site.path(ing.state_db)
        self.lock = FileLock(self.state_path, "dwfhpc ingest", wait_seconds=RESTART_WAIT_SECONDS)
        self._events = None
        try:
            self.db = StateDB(self.state_path)
            self._events = install_event_handler(self.db, "dwfhpc.ingest")  # ingest's log lines -> events table
            if ing.workers and ing.max_jobs and ing.workers > ing.max_jobs:  # --workers with --max-jobs keeps the cap
                log.warning("%d workers asked for, %d allowed by max_jobs", ing.workers, ing.max_jobs)
                site = self.site = site.with_changes("ingest", {"workers": ing.max_jobs})
                ing = site.ingest
            self.executor = executor or make_executor(site)
            if ing.workers:  # the workers are the scheduler jobs; CCD tickets wait in the shared queue
                max_jobs = None
            else:
                max_jobs = ing.max_jobs or self.executor.default_max_jobs()
            self.throttle = Throttle(max_jobs=max_jobs, rate=ing.rate)
            self.inbox = Inbox(site.path(ing.inbox), site.path(ing.parts_store), site.path(ing.quarantine), self.db,
                               mem_gb=site.scheduler.mem_gb, time_minutes=site.scheduler.time_minutes,
                               arrival_grace=ing.arrival_grace_seconds, verify_threads=ing.verify_threads)
            self.masters = MastersKeeper(self.db, site.path(site.calibration.library), site.path(site.calibration.masters),
                                         enabled=ing.auto_masters, on_built=self.executor.masters_changed,
                                         require_masters=site.node.require_masters,
                                         max_age_days=site.calibration.masters_max_age_days)
            self.submitter = Submitter(site, self.db, self.executor, self.throttle)
            self.collector = Collector(self.db, self.executor, max_attempts=ing.max_attempts,
                                       lost_after=ing.lost_after_seconds,
                                       max_resubmits_per_exposure=ing.max_resubmits_per_exposure,
                                       max_resubmits_per_night=ing.max_resubmits_per_night,
                                       retry_delay=ing.retry_delay_seconds,
                                       max_resource_retries=ing.max_resource_retries)
        except BaseException:
            if self._events is not None:
                remove_event_handler(self._events)
            self.lock.release()
            raise
        self.poll_seconds = ing.poll_seconds
        self.inbox_poll_seconds = min(ing.inbox_poll_seconds, self.poll_seconds)
        self._last_collect = float("-inf")
        self._stop = threading.Event()
        self._last_report = 0.0
        self._reporter: threading.Thread | None = None
        self.polls = 0

    # ---------------------------------------------------------------- loop
    def step(self, now: float | None = None, *, collect: bool = True) -> dict:
        """One inbox scan, and (``collect``) one scheduler poll: what arrived, was submitted, was collected."""
        return self.poll_once(now, collect=collect).counts

    def poll_once(self, now: float | None = None, *, collect: bool = True) -> Step:
        """:meth:`step`, with when it ran and which parts it accepted."""
        started = time.time()
        now = now or started
        submitted = 0

        def submit(_stem: str | None = None) -> None:
            nonlocal submitted
            submitted += self.submitter.submit_ready(self.masters.blocked_nights(), now)

        scan = self.inbox.scan(now, on_accepted=submit)  # each part submitted as soon as it is verified
        self.masters.update()
        collected: dict = {}
        collect_times = None
        if collect:
            t0 = time.time()
            collected = self.collector.poll(now)
            collect_times = (t0, time.time())
            self._last_collect = time.monotonic()
            self.masters.update()
            self.polls += 1
        submit()
        if self.opts.report and now - self._last_report >= self.site.ingest.report_every_seconds:
            self._report_in_background()
            self._last_report = now
        counts = {"accepted": len(scan.accepted), "quarantined": len(scan.quarantined), "waiting": len(scan.waiting),
                  "submitted": submitted, **collected}
        return Step(counts, started, list(scan.accepted), collect_times)

    def idle(self) -> bool:
        """Nothing waiting in the inbox, queued, running or being built."""
        inbox = self.site.path(self.site.ingest.inbox)
        # a tarball without its manifest yet is waiting too: the inbox quarantines it after the arrival grace
        waiting = inbox.is_dir() and any(
            not p.name.startswith(".") for pattern in ("*.manifest.json", "*.tar") for p in inbox.glob(pattern))
        return (not waiting and not self.db.count_tasks(TaskState.QUEUED, *TASK_ACTIVE)
                and not self.masters.blocked_nights() and not self.masters.busy())

    def run(self, *, once: bool = False, drain: bool = False, timeout: float | None = None,
            observer: Callable[[Step], None] | None = None, until: Callable[[], bool] | None = None) -> dict:
        """Poll until :meth:`request_stop` (``once``: a single poll; ``drain``: until :meth:`idle`).

        ``observer(step)`` is called after each poll with its :class:`Step` (counts and times); ``until()`` is
        asked after each poll and ends the run when it returns true. Returns the last poll's counts.
        """
        deadline = time.monotonic() + timeout if timeout else None
        last: dict = {}
        try:
            while True:
                t0 = time.monotonic()
                collect = once or t0 - self._last_collect >= self.poll_seconds - 1e-3
                step = self.poll_once(collect=collect)
                last = step.counts
                if observer is not None:
                    observer(step)
                if (once or self._stop.is_set() or (drain and collect and self.idle())
                        or (until is not None and until())):
                    break
                if deadline and time.monotonic() > deadline:
                    log.error("ingest: stopped after %.0f s with work left", timeout)
                    break
                self._stop.wait(max(0.0, self.inbox_poll_seconds - (time.monotonic() - t0)))
        finally:
            if self.opts.report:
                if self._reporter is not None:
                    self._reporter.join()
                self.write_reports()
        return last

    def request_stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self._reporter is not None:
            self._reporter.join(timeout=300)
        self.masters.wait(timeout=300)
        self.inbox.close()
        self.executor.close()
        remove_event_handler(self._events)
        self.db.close()
        self.lock.release()

    # ---------------------------------------------------------------- report
    def _report_in_background(self) -> None:
        """Redraw the night report in a thread (a few seconds of plotting must not hold the inbox)."""
        if self._reporter is not None and self._reporter.is_alive():
            return  # the previous one is still drawing: skip this turn
        self._reporter = threading.Thread(target=self.write_reports, name="night-report", daemon=True)
        self._reporter.start()

    def write_reports(self) -> list[Path]:
        from ..report.collect import write_night_reports

        try:
            return write_night_reports(self.site, self.db)
        except Exception as exc:  # a report must never stop the night; say why and carry on
            log.warning("night report not written: %s", exc)
            return []
