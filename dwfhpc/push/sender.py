"""The N streams: one thread per transport, each taking the next part from the queue and delivering it.

:class:`Retry` is push's one retry loop (exponential backoff while the error is retryable), used by
the streams for every part and by the runner and the reconciler for ``prepare`` and listings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..config import TransportSettings
from ..errors import TransferError
from .journal import Journal
from .scheduler import Flight, QueuedPart
from .transport import Transport
from .view import PushView, StreamStats, ViewState

T = TypeVar("T")


class Retry:
    """Call ``fn`` again after ``backoff_seconds * 2**attempt`` (at most ``backoff_max``) while it fails retryably.

    Gives up (re-raises the last :class:`TransferError`) when the error is not retryable, after
    ``limit`` retries (``None``: no limit), or once ``stop`` is set. Each retry is a warning in the
    journal and in the view.
    """

    def __init__(self, settings: TransportSettings, journal: Journal, view: PushView, stop: threading.Event):
        self.settings = settings
        self.journal = journal
        self.view = view
        self.stop = stop

    def __call__(self, fn: Callable[[], T], what: str, *, limit: int | None, expid: str | None = None,
                 on_retry: Callable[[TransferError, float], None] | None = None, **fields) -> T:
        t = self.settings
        attempt = 0
        while True:
            try:
                return fn()
            except TransferError as exc:
                if not exc.retryable or self.stop.is_set() or (limit is not None and attempt >= limit):
                    raise
                delay = min(t.backoff_seconds * 2 ** attempt, t.backoff_max)
                attempt += 1
                if on_retry is not None:
                    on_retry(exc, delay)
                self.journal.event("warning", f"retry {what} in {delay:g} s: {exc}", expid)
                self.view.event("warning", "retry", **(fields or {"what": what}), attempt=attempt, delay_s=delay,
                                error=str(exc))
                if self.stop.wait(delay):
                    raise


class Sender:
    """Runs one stream per transport until ``stop``; confirms parts in the journal and reports deliveries."""

    def __init__(self, transports: list[Transport], flight: Flight, journal: Journal, view: PushView,
                 state: ViewState, retry: Retry, outgoing: Path, stop: threading.Event, *, once: bool,
                 keep_sent_parts: bool):
        self.transports = transports
        self.flight = flight
        self.journal = journal
        self.view = view
        self.state = state
        self.retry = retry
        self.outgoing = outgoing
        self.stop = stop
        self.once = once
        self.keep_sent_parts = keep_sent_parts
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for tr in self.transports:
            th = threading.Thread(target=self._stream_loop, args=(tr,), name=f"stream-{tr.stream}", daemon=True)
            th.start()
            self._threads.append(th)

    def join(self, timeout: float) -> None:
        """Wait for the streams to finish their current part (call after setting ``stop``)."""
        self.flight.queue.wake_all()
        for th in self._threads:
            th.join(timeout=timeout)

    def _stream_loop(self, tr: Transport) -> None:
        stats = self.state.streams[tr.stream]
        while not self.stop.is_set():
            qp = self.flight.queue.get(timeout=0.5)
            if qp is None:
                continue
            stats.state, stats.part = "sending", f"{qp.expid}.p{qp.k}of{qp.n}"
            try:
                self._send(tr, qp, stats)
            finally:
                stats.state, stats.part = "idle", ""

    def _send(self, tr: Transport, qp: QueuedPart, stats: StreamStats) -> None:
        tar, manifest = self.outgoing / qp.tar, self.outgoing / qp.manifest

        def attempt() -> float:
            stats.state = "sending"
            self.journal.part_attempt(qp.expid, qp.k, tr.stream, time.time())
            t0 = time.monotonic()
            if not tar.exists() or not manifest.exists():
                raise TransferError("part file missing from the outgoing folder (will be re-packed on restart)", tar)
            tr.deliver(tar, manifest)
            return time.monotonic() - t0

        def on_retry(exc: TransferError, delay: float) -> None:
            self.journal.set_part(qp.expid, qp.k, reason=str(exc), retryable=1)
            stats.state = f"retry in {delay:.0f}s"

        try:
            seconds = self.retry(attempt, qp.tar, limit=self.retry.settings.retries if self.once else None,
                                 expid=qp.expid, on_retry=on_retry, part=qp.tar, stream=tr.stream)
        except TransferError as exc:
            self._part_failed(qp, exc)
            return
        now = time.time()
        stats.bytes_total += qp.tar_bytes
        stats.parts_sent += 1
        stats.last_rate = qp.tar_bytes / seconds if seconds > 0 else 0.0
        with self.flight.lock:
            self.journal.set_part(qp.expid, qp.k, state="confirmed", t_confirmed=now, send_seconds=seconds,
                                  reason=None, retryable=0)
            if not self.keep_sent_parts:
                tar.unlink(missing_ok=True)
                manifest.unlink(missing_ok=True)
            self.view.event("info", "sent", part=qp.tar, stream=tr.stream, mb=qp.tar_bytes / 1e6,
                            seconds=seconds, mb_s=stats.last_rate / 1e6)
            if self.journal.confirm_exposure_if_done(qp.expid, now):
                self.delivered(qp.expid)

    def _part_failed(self, qp: QueuedPart, exc: TransferError) -> None:
        with self.flight.lock:
            if self.stop.is_set() and exc.retryable:  # interrupted: left for the next run
                self.journal.set_part(qp.expid, qp.k, state="packed", reason=str(exc), retryable=1)
                return
            self.journal.set_part(qp.expid, qp.k, state="failed", reason=str(exc), retryable=int(exc.retryable))
            self.journal.set_exposure(qp.expid, state="failed", reason=f"part {qp.k}: {exc}")
            self.journal.event("error", str(exc), qp.expid)
            if qp.expid in self.flight.expids:
                self.flight.expids.discard(qp.expid)
                self.flight.outcome.failed += 1
            self.view.event("error", "send-failed", part=qp.tar, retryable=exc.retryable, reason=str(exc))

    def delivered(self, expid: str) -> None:
        """Every part of ``expid`` confirmed (call holding ``flight.lock``): out of flight, counted, reported."""
        exp = self.journal.exposure(expid)
        latency = (exp.t_delivered or 0) - (exp.t_complete or 0)
        self.flight.expids.discard(expid)
        self.flight.outcome.delivered += 1
        self.state.delivered.append((expid, latency))
        self.journal.event("info", f"delivered in {latency:.1f} s", expid)
        self.view.event("info", "delivered", expid=expid, parts=exp.nparts, latency_s=latency,
                        pack_s=(exp.t_packed or 0) - (exp.t_pack_start or 0),
                        wait_s=(exp.t_pack_start or 0) - (exp.t_complete or 0))
