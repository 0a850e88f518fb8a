"""The push main loop: watch, pack in a process pool, send on N streams, journal everything."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..config import SiteSettings
from ..errors import DwfError, TransferError
from ..layout import manifest_name, part_tar_name
from ..locking import RESTART_WAIT_SECONDS, FileLock
from ..parts import Part, pack_exposure
from .journal import ExposureRow, Journal
from .scheduler import Policy, PartQueue, QueuedPart
from .transport import SshTransport, Transport, make_transports
from .view import PushView, StreamStats, ViewState
from .watcher import Watcher


@dataclass
class PushOptions:
    streams: int
    mode: str
    nbundle: int
    exp_min: int
    codec: str
    parts: int
    once: bool = False
    quiet: bool = False
    live: bool | None = None


@dataclass
class PushOutcome:
    delivered: int = 0
    failed: int = 0
    x_of_y: tuple[int, int] | None = None  # end-of-night: (delivered, expected)


class Push:
    """One run of ``dwfhpc push`` (continuous, ``--once`` or end-of-night)."""

    def __init__(self, site: SiteSettings, opts: PushOptions):
        self.site = site
        self.opts = opts
        p = site.push
        self.raw_dir = site.path(p.raw_dir)
        self.outgoing = site.path(p.outgoing_dir)
        self.journal_path = site.path(p.journal)
        self.transports: list[Transport] = make_transports(site, opts.streams, str(self.journal_path))
        self.lock = FileLock(self.journal_path, "dwfhpc push", wait_seconds=RESTART_WAIT_SECONDS)
        self.journal = Journal(self.journal_path)
        self.watcher = Watcher(self.raw_dir, self.journal, patterns=p.patterns, stable_seconds=p.stable_seconds,
                               incomplete_timeout=p.incomplete_timeout, visit_quiet_seconds=p.visit_quiet_seconds)
        self.policy = Policy(opts.mode, opts.streams, opts.nbundle, opts.exp_min)
        self.queue = PartQueue()
        self.state = ViewState(streams=[StreamStats() for _ in range(opts.streams)])
        self.view = PushView(self.state, quiet=opts.quiet, live=opts.live)
        self.stop = threading.Event()
        self._mu = threading.RLock()
        self.in_flight: set[str] = set()
        self.packing: dict[str, Future] = {}
        self.outcome = PushOutcome()
        self.pack_pool: ProcessPoolExecutor | None = None
        self.pack_threads: ThreadPoolExecutor | None = None

    # ---------------------------------------------------------------- life cycle
    def run(self) -> PushOutcome:
        t = self.site.transport
        self.view.event("info", "start", mode=self.opts.mode, streams=self.opts.streams, transport=t.kind,
                        raw_dir=self.raw_dir, once=self.opts.once)
        jobs = self.site.push.jobs or os.cpu_count() or 1
        # forkserver: the packing workers must not inherit the journal lock (a forked worker outliving a killed
        # push would hold it and refuse the restart)
        self.pack_pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("forkserver"))
        self.pack_threads = ThreadPoolExecutor(max_workers=max(1, min(2, self.opts.streams)), thread_name_prefix="pack")
        workers = [threading.Thread(target=self._stream_loop, args=(tr,), name=f"stream-{tr.stream}", daemon=True)
                   for tr in self.transports]
        try:
            with self.view:
                if isinstance(self.transports[0], SshTransport):
                    self._retrying(self.transports[0].prepare, "prepare")
                self.watcher.recover_visits()
                self._recover()
                if self.opts.mode == "end-of-night":
                    self._reconcile()
                for w in workers:
                    w.start()
                self._loop()
                if self.opts.mode == "end-of-night":
                    self._final_count()
        finally:
            self.stop.set()
            self.queue.wake_all()
            for w in workers:
                w.join(timeout=self.site.transport.timeout_seconds * 4 + 5)
            self.pack_threads.shutdown(wait=True, cancel_futures=True)
            self.pack_pool.shutdown(wait=True, cancel_futures=True)
            for tr in self.transports:
                tr.close()
            self.journal.close()
            self.lock.release()
        return self.outcome

    def request_stop(self) -> None:
        self.stop.set()
        self.queue.wake_all()

    def _loop(self) -> None:
        poll = self.site.push.poll_seconds
        while not self.stop.is_set():
            res = self.watcher.poll()
            for path, reason in res.failed:
                self.outcome.failed += 1
                self.view.event("error", "file-failed", file=path, reason=reason)
            for expid in res.ready:
                exp = self.journal.exposure(expid)
                self.view.event("info", "complete", expid=expid, obstype=exp.obstype if exp else "",
                                files=len(exp.files) if exp else 0)
            with self._mu:
                candidates = [e for e in self.journal.exposures("complete") if e.expid not in self.in_flight]
                for exp in self.policy.select(candidates, len(self.in_flight)):
                    self._start_packing(exp)
                waiting = len(self.policy.select(candidates, 0)) if self.opts.mode == "end-of-night" else len(candidates)
                self.state.pending_files = res.pending
                self.state.queued_exposures = len(candidates)
                self.state.queued_parts = len(self.queue)
                self.state.packing = len(self.packing)
                self.state.in_flight = len(self.in_flight)
                idle = not self.in_flight and not self.packing
            self.view.refresh()
            if self.opts.once and idle and res.pending == 0 and not (
                    waiting if self.opts.mode == "end-of-night" else candidates):
                return
            self.stop.wait(poll)

    # ---------------------------------------------------------------- recovery
    def _recover(self) -> None:
        """After a crash: exposures half packed are re-packed; parts not confirmed are queued again."""
        for exp in self.journal.exposures("packing"):
            self.journal.set_exposure(exp.expid, state="complete")
        for exp in self.journal.exposures("packed", "failed"):
            if exp.state == "failed" and not self.journal.parts(exp.expid, "failed"):
                continue  # failed while packing: the reason is recorded; not retried
            parts = [pt for pt in self.journal.parts(exp.expid) if pt.state != "confirmed"
                     and not (pt.state == "failed" and not pt.retryable)]
            if not parts:
                self.journal.confirm_exposure_if_done(exp.expid, time.time())
                continue
            if any(not (self.outgoing / pt.tar_name).exists() or not (self.outgoing / pt.manifest_name).exists()
                   for pt in parts):
                self.journal.set_exposure(exp.expid, state="complete")  # re-pack; confirmed parts are skipped
                continue
            self.journal.set_exposure(exp.expid, state="packed", reason=None)
            self.in_flight.add(exp.expid)
            for pt in parts:
                self.journal.set_part(exp.expid, pt.k, state="packed", reason=None)
                self._enqueue(exp, pt.k, pt.n, pt.tar_bytes or 0)
            self.view.event("info", "resume", expid=exp.expid, parts=len(parts))

    def _reconcile(self) -> None:
        """End of night: parts the receiver does not hold (expnum > exp_min) are sent again."""
        held = self._receiver_listing()
        missing_total = 0
        for exp in self.journal.exposures("packed", "delivered", "failed"):
            if exp.expnum <= self.opts.exp_min or not exp.nparts or exp.expid in self.in_flight:
                continue
            missing = [pt for pt in self.journal.parts(exp.expid)
                       if pt.tar_name not in held or pt.manifest_name not in held]
            known = {pt.k for pt in self.journal.parts(exp.expid)}
            if not missing and len(known) >= exp.nparts:
                continue
            missing_total += len(missing) + exp.nparts - len(known)
            for pt in missing:
                self.journal.set_part(exp.expid, pt.k, state="packed", reason=None, t_confirmed=None)
            local = all((self.outgoing / pt.tar_name).exists() and (self.outgoing / pt.manifest_name).exists()
                        for pt in missing)
            if local and len(known) >= exp.nparts:
                self.journal.set_exposure(exp.expid, state="packed", t_delivered=None, reason=None)
                self.in_flight.add(exp.expid)
                fresh = self.journal.exposure(exp.expid)
                for pt in missing:
                    self._enqueue(fresh, pt.k, pt.n, pt.tar_bytes or 0)
            else:  # part files gone (deleted after delivery): re-pack; parts still held are skipped
                self.journal.set_exposure(exp.expid, state="complete", t_delivered=None, reason=None)
            self.view.event("warning", "missing-on-receiver", expid=exp.expid, parts=len(missing))
        self.view.event("info", "reconciled", receiver_files=len(held), missing_parts=missing_total)

    def _receiver_listing(self) -> dict[str, int]:
        t = self.site.transport
        folders = [None] + list(t.delivered_dirs)
        held: dict[str, int] = {}
        tr = self.transports[0]
        for folder in folders:
            if folder is not None and t.kind == "local":
                folder = str(self.site.path(folder))
            held.update(self._retrying(lambda f=folder: tr.listing(f), "listing"))
        return held

    def _final_count(self) -> None:
        held = self._receiver_listing()
        expected = [e for e in self.journal.exposures() if e.expnum > self.opts.exp_min]
        done = []
        for exp in expected:
            parts = self.journal.parts(exp.expid)
            if exp.nparts and len(parts) >= exp.nparts and all(
                    pt.tar_name in held and pt.manifest_name in held for pt in parts):
                done.append(exp.expid)
        self.outcome.x_of_y = (len(done), len(expected))
        missing = sorted(e.expid for e in expected if e.expid not in done)
        self.view.event("info", "end-of-night", delivered=len(done), expected=len(expected),
                        missing=",".join(missing) or "none")

    def _retrying(self, fn, what: str):
        t = self.site.transport
        for attempt in range(t.retries + 1):
            try:
                return fn()
            except TransferError as exc:
                if not exc.retryable or attempt == t.retries or self.stop.is_set():
                    raise
                delay = min(t.backoff_seconds * 2 ** attempt, t.backoff_max)
                self.journal.event("warning", f"retry {what} in {delay:g} s: {exc}")
                self.view.event("warning", "retry", what=what, attempt=attempt + 1, delay_s=delay, error=str(exc))
                self.stop.wait(delay)
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- packing
    def _start_packing(self, exp: ExposureRow) -> None:
        self.in_flight.add(exp.expid)
        self.journal.set_exposure(exp.expid, state="packing", t_pack_start=time.time(), codec=self.opts.codec,
                                  attempts=exp.attempts + 1)
        self.packing[exp.expid] = self.pack_threads.submit(self._pack, exp)

    def _pack(self, exp: ExposureRow) -> None:
        p = self.site.push
        raw: Path | list[Path] = [Path(f) for f in exp.files] if len(exp.files) > 1 else Path(exp.files[0])
        try:
            parts = pack_exposure(raw, self.outgoing, codec=self.opts.codec, parts=exp.nparts or self.opts.parts,
                                  ratio=p.ratio, qlevel=p.qlevel, pool=self.pack_pool,
                                  progress=lambda part: self._on_part(exp, part))
        except (DwfError, OSError) as exc:
            reason = f"packing failed: {exc}"
            self.journal.set_exposure(exp.expid, state="failed", reason=reason)
            self.journal.event("error", reason, exp.expid)
            with self._mu:
                self.in_flight.discard(exp.expid)
                self.packing.pop(exp.expid, None)
                self.outcome.failed += 1
            self.view.event("error", "pack-failed", expid=exp.expid, reason=str(exc))
            return
        except Exception as exc:  # a worker process died (BrokenProcessPool) or a bug: report, keep going
            self.journal.set_exposure(exp.expid, state="complete", reason=f"packing interrupted: {exc!r}")
            with self._mu:
                self.in_flight.discard(exp.expid)
                self.packing.pop(exp.expid, None)
            self.view.event("error", "pack-interrupted", expid=exp.expid, reason=repr(exc))
            return
        now = time.time()
        with self._mu:
            if self.journal.exposure(exp.expid).state == "packing":  # not already delivered by the streams
                self.journal.set_exposure(exp.expid, state="packed")
            self.journal.set_exposure(exp.expid, t_packed=now, nparts=len(parts))
            self.packing.pop(exp.expid, None)
            self.view.event("info", "packed", expid=exp.expid, parts=len(parts), codec=self.opts.codec,
                            seconds=now - (self.journal.exposure(exp.expid).t_pack_start or now))
            if self.journal.confirm_exposure_if_done(exp.expid, now):
                self._delivered(exp.expid)

    def _on_part(self, exp: ExposureRow, part: Part) -> None:
        size = part.tar.stat().st_size
        with self._mu:
            self.journal.set_exposure(exp.expid, nparts=part.n)
            fresh = self.journal.part_packed(part.expid, part.k, part.n, part.tar.name, part.manifest.name, size,
                                             time.time())
        if not fresh:  # confirmed before a crash: never sent again
            if not self.site.push.keep_sent_parts:
                part.tar.unlink(missing_ok=True)
                part.manifest.unlink(missing_ok=True)
            return
        self._enqueue(self.journal.exposure(exp.expid), part.k, part.n, size)

    def _enqueue(self, exp: ExposureRow, k: int, n: int, size: int) -> None:
        qp = QueuedPart(exp.expid, k, n, part_tar_name(exp.expid, k, n), manifest_name(exp.expid, k, n), size)
        self.queue.put(self.policy.priority(exp, k), qp)

    # ---------------------------------------------------------------- sending
    def _stream_loop(self, tr: Transport) -> None:
        stats = self.state.streams[tr.stream]
        while not self.stop.is_set():
            qp = self.queue.get(timeout=0.5)
            if qp is None:
                continue
            stats.state, stats.part = "sending", f"{qp.expid}.p{qp.k}of{qp.n}"
            try:
                self._send(tr, qp, stats)
            finally:
                stats.state, stats.part = "idle", ""

    def _send(self, tr: Transport, qp: QueuedPart, stats: StreamStats) -> None:
        t = self.site.transport
        tar, manifest = self.outgoing / qp.tar, self.outgoing / qp.manifest
        attempt = 0
        while True:
            self.journal.part_attempt(qp.expid, qp.k, tr.stream, time.time())
            t0 = time.monotonic()
            try:
                if not tar.exists() or not manifest.exists():
                    raise TransferError("part file missing from the outgoing folder (will be re-packed on restart)", tar)
                tr.deliver(tar, manifest)
            except TransferError as exc:
                give_up = not exc.retryable or self.stop.is_set() or (self.opts.once and attempt >= t.retries)
                if not give_up:
                    delay = min(t.backoff_seconds * 2 ** attempt, t.backoff_max)
                    attempt += 1
                    self.journal.set_part(qp.expid, qp.k, reason=str(exc), retryable=1)
                    self.journal.event("warning", f"retry {qp.tar} in {delay:g} s: {exc}", qp.expid)
                    self.view.event("warning", "retry", part=qp.tar, stream=tr.stream, attempt=attempt,
                                    delay_s=delay, error=str(exc))
                    stats.state = f"retry in {delay:.0f}s"
                    if not self.stop.wait(delay):
                        stats.state = "sending"
                        continue
                self._part_failed(qp, exc)
                return
            seconds = time.monotonic() - t0
            break
        now = time.time()
        stats.bytes_total += qp.tar_bytes
        stats.parts_sent += 1
        stats.last_rate = qp.tar_bytes / seconds if seconds > 0 else 0.0
        with self._mu:
            self.journal.set_part(qp.expid, qp.k, state="confirmed", t_confirmed=now, send_seconds=seconds,
                                  reason=None, retryable=0)
            if not self.site.push.keep_sent_parts:
                tar.unlink(missing_ok=True)
                manifest.unlink(missing_ok=True)
            self.view.event("info", "sent", part=qp.tar, stream=tr.stream, mb=qp.tar_bytes / 1e6,
                            seconds=seconds, mb_s=stats.last_rate / 1e6)
            if self.journal.confirm_exposure_if_done(qp.expid, now):
                self._delivered(qp.expid)

    def _part_failed(self, qp: QueuedPart, exc: TransferError) -> None:
        with self._mu:
            if self.stop.is_set() and exc.retryable:  # interrupted: left for the next run
                self.journal.set_part(qp.expid, qp.k, state="packed", reason=str(exc), retryable=1)
                return
            self.journal.set_part(qp.expid, qp.k, state="failed", reason=str(exc), retryable=int(exc.retryable))
            self.journal.set_exposure(qp.expid, state="failed", reason=f"part {qp.k}: {exc}")
            self.journal.event("error", str(exc), qp.expid)
            if qp.expid in self.in_flight:
                self.in_flight.discard(qp.expid)
                self.outcome.failed += 1
            self.view.event("error", "send-failed", part=qp.tar, retryable=exc.retryable, reason=str(exc))

    def _delivered(self, expid: str) -> None:
        exp = self.journal.exposure(expid)
        latency = (exp.t_delivered or 0) - (exp.t_complete or 0)
        self.in_flight.discard(expid)
        self.outcome.delivered += 1
        self.state.delivered.append((expid, latency))
        self.journal.event("info", f"delivered in {latency:.1f} s", expid)
        self.view.event("info", "delivered", expid=expid, parts=exp.nparts, latency_s=latency,
                        pack_s=(exp.t_packed or 0) - (exp.t_pack_start or 0),
                        wait_s=(exp.t_pack_start or 0) - (exp.t_complete or 0))
