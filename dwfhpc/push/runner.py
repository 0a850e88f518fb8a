"""The push main loop: wires the watcher, the packer, the streams and the reconciler, and drives them.

:class:`~dwfhpc.push.watcher.Watcher` finds complete exposures, :class:`~dwfhpc.push.order.Policy`
picks which to start, :class:`~dwfhpc.push.packer.Packer` packs them into parts,
:class:`~dwfhpc.push.sender.Sender` delivers the parts on N streams,
:class:`~dwfhpc.push.reconciler.Reconciler` resumes a killed run and does the end-of-night count;
the :class:`~dwfhpc.push.journal.Journal` records all of it and :class:`~dwfhpc.push.view.PushView` shows it.
"""

from __future__ import annotations

import threading
from typing import Any

from ..config import SiteSettings
from ..link import Transport, make_transports
from ..link.capacity import chosen_streams
from ..locking import RESTART_WAIT_SECONDS, FileLock
from ..states import PushExposureState
from .journal import Journal
from .order import Flight, Policy, PushOutcome
from .packer import Packer
from .reconciler import Reconciler
from .sender import Retry, Sender
from .view import PushView, StreamStats, ViewState
from .watcher import Watcher

__all__ = ["Push", "PushOptions", "PushOutcome"]


class PushOptions:
    """How this run behaves; what it runs with is ``site.push`` (the command line sets it through
    ``load_site(..., overrides={"push": ...})``).

    Library callers that hold a loaded site may also give push settings here (``streams=4, codec="rice"``):
    those not None replace ``site.push``'s before anything reads them.
    """

    def __init__(self, *, once: bool = False, quiet: bool = False, live: bool | None = None, **settings: Any):
        self.once, self.quiet, self.live = once, quiet, live
        self.settings = {k: v for k, v in settings.items() if v is not None}


class Push:
    """One run of ``dwfhpc push`` (continuous, ``--once`` or end-of-night)."""

    def __init__(self, site: SiteSettings, opts: PushOptions | None = None):
        self.opts = opts = opts or PushOptions()
        site = self.site = site.with_changes("push", opts.settings)
        self.streams_reason: str | None = None
        if site.push.streams == "auto":
            t = site.transport
            n, self.streams_reason = chosen_streams(t.kind, t.link_mbit, t.rtt_ms)
            site = self.site = site.with_changes("push", {"streams": n, "parts": max(site.push.parts, n)})
        p = site.push
        self.raw_dir = site.path(p.raw_dir)
        self.outgoing = site.path(p.outgoing_dir)
        self.journal_path = site.path(p.journal)
        self.transports: list[Transport] = make_transports(site, p.streams, str(self.journal_path))
        self.lock = FileLock(self.journal_path, "dwfhpc push", wait_seconds=RESTART_WAIT_SECONDS)
        try:
            self.journal = Journal(self.journal_path)
            self.watcher = Watcher(self.raw_dir, self.journal, patterns=p.patterns, stable_seconds=p.stable_seconds,
                                   incomplete_timeout=p.incomplete_timeout, visit_quiet_seconds=p.visit_quiet_seconds)
        except BaseException:
            self.lock.release()
            raise
        self.policy = Policy(p.mode, p.streams, p.nbundle, p.exp_min)
        self.flight = Flight(self.policy)
        self.outcome: PushOutcome = self.flight.outcome
        self.state = ViewState(streams=[StreamStats() for _ in range(p.streams)])
        self.view = PushView(self.state, quiet=opts.quiet, live=opts.live)
        self.stop = threading.Event()
        self.retry = Retry(site.transport, self.journal, self.view, self.stop)
        self.sender = Sender(self.transports, self.flight, self.journal, self.view, self.state, self.retry,
                             self.outgoing, self.stop, once=opts.once, keep_sent_parts=p.keep_sent_parts)
        self.packer = Packer(p, self.outgoing, self.journal, self.flight, self.view, codec=p.codec,
                             parts=p.parts, threads=max(1, min(2, p.streams)),
                             on_delivered=self.sender.delivered)
        self.reconciler = Reconciler(site, self.journal, self.flight, self.view, self.transports[0], self.retry,
                                     self.outgoing, exp_min=p.exp_min)

    # ---------------------------------------------------------------- life cycle
    def run(self) -> PushOutcome:
        t = self.site.transport
        self.view.event("info", "start", mode=self.site.push.mode, streams=self.site.push.streams, transport=t.kind,
                        raw_dir=self.raw_dir, once=self.opts.once)
        if self.streams_reason:
            self.view.event("info", "streams-auto", streams=self.site.push.streams, parts=self.site.push.parts,
                            why=self.streams_reason)
        self.packer.start()
        try:
            with self.view:
                self.retry(self.transports[0].prepare, "prepare", limit=t.retries)
                self.watcher.recover_visits()
                self.reconciler.recover()
                if self.site.push.mode == "end-of-night":
                    self.reconciler.reconcile()
                self.sender.start()
                self._loop()
                if self.site.push.mode == "end-of-night":
                    self.outcome.x_of_y = self.reconciler.final_count()
        finally:
            self.request_stop()
            self.sender.join(timeout=t.timeout_seconds * 4 + 5)
            self.packer.close()
            for tr in self.transports:
                tr.close()
            self.journal.close()
            self.lock.release()
        return self.outcome

    def request_stop(self) -> None:
        self.stop.set()
        self.flight.queue.wake_all()

    def _loop(self) -> None:
        poll = self.site.push.poll_seconds
        flight = self.flight
        while not self.stop.is_set():
            res = self.watcher.poll()
            for path, reason in res.failed:
                self.outcome.failed += 1
                self.view.event("error", "file-failed", file=path, reason=reason)
            for expid in res.ready:
                exp = self.journal.exposure(expid)
                self.view.event("info", "complete", expid=expid, obstype=exp.obstype if exp else "",
                                files=len(exp.files) if exp else 0)
            with flight.lock:
                candidates = [e for e in self.journal.exposures(PushExposureState.COMPLETE) if e.expid not in flight]
                for exp in self.policy.select(candidates, len(flight)):
                    self.packer.submit(exp)
                waiting = len(self.policy.select(candidates, 0)) if self.site.push.mode == "end-of-night" else len(candidates)
                self.state.pending_files = res.pending
                self.state.queued_exposures = len(candidates)
                self.state.queued_parts = len(flight.queue)
                self.state.packing = len(self.packer)
                self.state.in_flight = len(flight)
                idle = not len(flight) and not len(self.packer)
            self.view.refresh()
            if self.opts.once and idle and res.pending == 0 and not waiting:
                return
            self.stop.wait(poll)
