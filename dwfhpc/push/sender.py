"""The N streams: one thread per transport, each taking its share of the queued parts and delivering them.

:class:`Retry` is push's one retry loop (exponential backoff while the error is retryable), used by
the streams for every part and by the runner and the reconciler for ``prepare`` and listings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ..config import TransportSettings
from ..errors import TransferError
from ..link import Transport
from ..states import StreamState
from .journal import Journal
from .order import Flight, QueuedPart
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
    """Runs one stream per transport until ``stop``; confirms parts in the journal and reports deliveries.

    A stream takes a batch: its share of the parts queued (``ceil(queued / idle streams)``, at most
    ``transport.batch_parts``), sends it in one rsync call into staging, then moves it into the inbox.
    With ``transport.pipeline_moves`` the move runs on the stream's mover thread while the stream's
    next rsync is on the wire (one move at a time per stream). A part is confirmed in the journal
    only once its manifest is in the inbox; a batch whose move fails is sent again whole (both steps
    are idempotent), so a crash anywhere leaves parts unconfirmed, never lost or confirmed twice.
    """

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
        self.batch_parts = max(1, getattr(retry.settings, "batch_parts", 1))
        self.pipeline = bool(getattr(retry.settings, "pipeline_moves", False))
        self._threads: list[threading.Thread] = []
        self._busy = 0  # streams with an rsync in progress
        self._busy_lock = threading.Lock()

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

    def _share(self, queued: int) -> int:
        """How many of ``queued`` parts one idle stream takes: an equal share among the idle streams.

        Called by the queue under its lock as the stream takes them, so the stream counts as busy at once.
        """
        with self._busy_lock:
            idle = max(1, len(self.transports) - self._busy)
            self._busy += 1
        return min(self.batch_parts, -(-queued // idle))

    def _stream_loop(self, tr: Transport) -> None:
        stats = self.state.streams[tr.stream]
        mover = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"move-{tr.stream}") if self.pipeline else None
        moving: Future | None = None
        try:
            while not self.stop.is_set():
                batch = self.flight.queue.get_batch(timeout=0.5, share=self._share)
                if not batch:
                    continue
                stats.state, stats.part = StreamState.SENDING, _label(batch)
                try:
                    sent = self._send(tr, batch, stats)
                finally:
                    with self._busy_lock:
                        self._busy -= 1
                    stats.state, stats.part = StreamState.IDLE, ""
                if sent is None:
                    continue
                if mover is None:
                    self._move(tr, batch, sent, stats)
                    continue
                if moving is not None:
                    moving.result()  # one move at a time per stream: the previous batch's first
                moving = mover.submit(self._move, tr, batch, sent, stats)
        finally:
            if mover is not None:
                mover.shutdown(wait=True)  # the last batch's move: its parts are confirmed or left packed

    def _files(self, batch: list[QueuedPart]) -> list[tuple[Path, Path]]:
        return [(self.outgoing / qp.tar, self.outgoing / qp.manifest) for qp in batch]

    def _check_files(self, files: list[tuple[Path, Path]]) -> None:
        for tar, manifest in files:
            if not tar.exists() or not manifest.exists():
                raise TransferError("part file missing from the outgoing folder (will be re-packed on restart)", tar)

    def _retry(self, fn: Callable[[], None], batch: list[QueuedPart], tr: Transport, stats: StreamStats) -> bool:
        """Run ``fn`` through :class:`Retry`; on giving up, every part of the batch failed (False)."""
        def on_retry(exc: TransferError, delay: float) -> None:
            for qp in batch:
                self.journal.set_part(qp.expid, qp.k, reason=str(exc), retryable=1)
            stats.state = f"retry in {delay:.0f}s"

        try:
            self.retry(fn, batch[0].tar, limit=self.retry.settings.retries if self.once else None,
                       expid=batch[0].expid, on_retry=on_retry, part=_label(batch), stream=tr.stream)
        except TransferError as exc:
            for qp in batch:
                self._part_failed(qp, exc)
            return False
        return True

    def _send(self, tr: Transport, batch: list[QueuedPart], stats: StreamStats) -> float | None:
        """rsync the batch into staging (retried); the start time, or None when it failed."""
        files = self._files(batch)
        t0 = time.monotonic()

        def attempt() -> None:
            stats.state = StreamState.SENDING
            now = time.time()
            for qp in batch:
                self.journal.part_attempt(qp.expid, qp.k, tr.stream, now)
            self._check_files(files)
            tr.send(files)

        return t0 if self._retry(attempt, batch, tr, stats) else None

    def _move(self, tr: Transport, batch: list[QueuedPart], t0: float, stats: StreamStats) -> None:
        """Move the batch into the inbox (a failed move: the whole batch sent again), then confirm its parts."""
        files = self._files(batch)
        first = [True]

        def attempt() -> None:
            if first[0]:
                first[0] = False
                tr.move(files)
                return
            self._check_files(files)
            tr.deliver_many(files)

        if not self._retry(attempt, batch, tr, stats):
            return
        seconds = time.monotonic() - t0
        nbytes = sum(qp.tar_bytes for qp in batch)
        stats.bytes_total += nbytes
        stats.parts_sent += len(batch)
        stats.last_rate = nbytes / seconds if seconds > 0 else 0.0
        now = time.time()
        for qp in batch:
            self._confirm(tr, qp, now, seconds, stats)

    def _confirm(self, tr: Transport, qp: QueuedPart, now: float, seconds: float, stats: StreamStats) -> None:
        tar, manifest = self.outgoing / qp.tar, self.outgoing / qp.manifest
        with self.flight.lock:
            self.journal.mark_part_confirmed(qp.expid, qp.k, now=now, send_seconds=seconds)
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
                self.journal.mark_part_packed(qp.expid, qp.k, reason=str(exc), retryable=1)
                return
            self.journal.mark_part_failed(qp.expid, qp.k, str(exc), retryable=exc.retryable)
            self.journal.mark_exposure_failed(qp.expid, f"part {qp.k}: {exc}")
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


def _label(batch: list[QueuedPart]) -> str:
    qp = batch[0]
    return f"{qp.expid}.p{qp.k}of{qp.n}" + (f" +{len(batch) - 1}" if len(batch) > 1 else "")
