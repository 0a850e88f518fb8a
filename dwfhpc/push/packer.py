"""Packing: each exposure started is packed into its parts in a process pool, each part queued as it is written.

A few threads (one per exposure being packed, at most two) drive :func:`dwfhpc.parts.pack_exposure`,
which spreads the CCDs over a ``forkserver`` process pool (with codec ``passthrough``, what ``auto``
picks for fpack'd raws, the CCDs are copied in the packing thread and the pool is not used). Forkserver, not fork: a forked worker
would inherit the journal's lock, and one outliving a killed push would refuse the restart.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from ..config import PushSettings
from ..errors import DwfError
from ..parts import Part, pack_exposure
from ..states import PushExposureState
from .journal import ExposureRow, Journal
from .order import Flight
from .view import PushView


class Packer:
    """Packs exposures on :meth:`submit`; ``on_delivered(expid)`` when packing finds every part already confirmed."""

    def __init__(self, settings: PushSettings, outgoing: Path, journal: Journal, flight: Flight, view: PushView, *,
                 codec: str, parts: int, threads: int, on_delivered: Callable[[str], None]):
        self.settings = settings
        self.outgoing = outgoing
        self.journal = journal
        self.flight = flight
        self.view = view
        self.codec = codec
        self.parts = parts
        self.threads = threads
        self.on_delivered = on_delivered
        self.packing: dict[str, Future] = {}
        self._pool: ProcessPoolExecutor | None = None
        self._threads: ThreadPoolExecutor | None = None

    def start(self) -> None:
        jobs = self.settings.jobs or os.cpu_count() or 1
        self._pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("forkserver"))
        self._threads = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="pack")

    def close(self) -> None:
        """Drop what has not started; wait for what has."""
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __len__(self) -> int:
        return len(self.packing)

    def submit(self, exp: ExposureRow) -> None:
        """Start packing ``exp`` (call holding ``flight.lock``)."""
        self.flight.expids.add(exp.expid)
        self.journal.mark_packing(exp.expid, t_pack_start=time.time(), codec=self.codec, attempts=exp.attempts + 1)
        self.packing[exp.expid] = self._threads.submit(self._pack, exp)

    def _pack(self, exp: ExposureRow) -> None:
        p = self.settings
        raw: Path | list[Path] = [Path(f) for f in exp.files] if len(exp.files) > 1 else Path(exp.files[0])
        try:
            parts = pack_exposure(raw, self.outgoing, codec=self.codec, parts=exp.nparts or self.parts,
                                  ratio=p.ratio, qlevel=p.qlevel, pool=self._pool,
                                  progress=lambda part: self._on_part(exp, part))
        except (DwfError, OSError) as exc:
            reason = f"packing failed: {exc}"
            self.journal.mark_exposure_failed(exp.expid, reason)
            self.journal.event("error", reason, exp.expid)
            with self.flight.lock:
                self.flight.expids.discard(exp.expid)
                self.packing.pop(exp.expid, None)
                self.flight.outcome.failed += 1
            self.view.event("error", "pack-failed", expid=exp.expid, reason=str(exc))
            return
        except Exception as exc:  # a worker process died (BrokenProcessPool) or a bug: report, keep going
            self.journal.mark_repack(exp.expid, reason=f"packing interrupted: {exc!r}")
            with self.flight.lock:
                self.flight.expids.discard(exp.expid)
                self.packing.pop(exp.expid, None)
            self.view.event("error", "pack-interrupted", expid=exp.expid, reason=repr(exc))
            return
        now = time.time()
        codec = next((part.codec for part in parts if part.codec), self.codec)  # ``auto`` as resolved
        with self.flight.lock:
            if self.journal.exposure(exp.expid).state == PushExposureState.PACKING:  # not already delivered
                self.journal.mark_packed(exp.expid)
            self.journal.set_exposure(exp.expid, t_packed=now, nparts=len(parts), codec=codec)
            self.packing.pop(exp.expid, None)
            self.view.event("info", "packed", expid=exp.expid, parts=len(parts), codec=codec,
                            seconds=now - (self.journal.exposure(exp.expid).t_pack_start or now))
            if self.journal.confirm_exposure_if_done(exp.expid, now):
                self.on_delivered(exp.expid)

    def _on_part(self, exp: ExposureRow, part: Part) -> None:
        size = part.tar.stat().st_size
        with self.flight.lock:
            self.journal.set_exposure(exp.expid, nparts=part.n)
            fresh = self.journal.part_packed(part.expid, part.k, part.n, part.tar.name, part.manifest.name, size,
                                             time.time())
        if not fresh:  # confirmed before a crash: never sent again
            if not self.settings.keep_sent_parts:
                part.tar.unlink(missing_ok=True)
                part.manifest.unlink(missing_ok=True)
            return
        self.flight.enqueue(self.journal.exposure(exp.expid), part.k, part.n, size)
