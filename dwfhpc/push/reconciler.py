"""What a previous run left, and what never arrived.

:meth:`Reconciler.recover` (every start): exposures half packed are packed again, parts packed but
not confirmed are queued again, parts confirmed are never sent again. :meth:`Reconciler.reconcile`
(end of night, before sending): parts the receiver does not hold are sent (or packed) again.
:meth:`Reconciler.final_count` (end of night, after sending): how many exposures arrived whole.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..config import SiteSettings
from ..link import Transport
from ..states import PushExposureState, SentPartState
from .journal import Journal
from .order import Flight
from .sender import Retry
from .view import PushView


class Reconciler:
    """Compares the journal with the outgoing folder (:meth:`recover`) and the receiver (:meth:`reconcile`)."""

    def __init__(self, site: SiteSettings, journal: Journal, flight: Flight, view: PushView, transport: Transport,
                 retry: Retry, outgoing: Path, *, exp_min: int):
        self.site = site
        self.journal = journal
        self.flight = flight
        self.view = view
        self.transport = transport
        self.retry = retry
        self.outgoing = outgoing
        self.exp_min = exp_min

    def _local(self, parts) -> bool:
        return all((self.outgoing / pt.tar_name).exists() and (self.outgoing / pt.manifest_name).exists()
                   for pt in parts)

    def recover(self) -> None:
        """After a crash: exposures half packed are re-packed; parts not confirmed are queued again."""
        for exp in self.journal.exposures(PushExposureState.PACKING):
            self.journal.mark_repack(exp.expid)
        for exp in self.journal.exposures(PushExposureState.PACKED, PushExposureState.FAILED):
            if exp.state == PushExposureState.FAILED and not self.journal.parts(exp.expid, SentPartState.FAILED):
                continue  # failed while packing: the reason is recorded; not retried
            parts = [pt for pt in self.journal.parts(exp.expid) if pt.state != SentPartState.CONFIRMED
                     and not (pt.state == SentPartState.FAILED and not pt.retryable)]
            if not parts:
                self.journal.confirm_exposure_if_done(exp.expid, time.time())
                continue
            if not self._local(parts):
                self.journal.mark_repack(exp.expid)  # re-pack; confirmed parts are skipped
                continue
            self.journal.mark_packed(exp.expid, reason=None)
            self.flight.expids.add(exp.expid)
            for pt in parts:
                self.journal.mark_part_packed(exp.expid, pt.k, reason=None)
                self.flight.enqueue(exp, pt.k, pt.n, pt.tar_bytes or 0)
            self.view.event("info", "resume", expid=exp.expid, parts=len(parts))

    def reconcile(self) -> None:
        """End of night: parts the receiver does not hold (expnum > exp_min) are sent again."""
        held = self.receiver_listing()
        missing_total = 0
        for exp in self.journal.exposures(PushExposureState.PACKED, PushExposureState.DELIVERED,
                                          PushExposureState.FAILED):
            if exp.expnum <= self.exp_min or not exp.nparts or exp.expid in self.flight:
                continue
            missing = [pt for pt in self.journal.parts(exp.expid)
                       if pt.tar_name not in held or pt.manifest_name not in held]
            known = {pt.k for pt in self.journal.parts(exp.expid)}
            if not missing and len(known) >= exp.nparts:
                continue
            missing_total += len(missing) + exp.nparts - len(known)
            for pt in missing:
                self.journal.mark_part_packed(exp.expid, pt.k, reason=None, t_confirmed=None)
            if self._local(missing) and len(known) >= exp.nparts:
                self.journal.mark_packed(exp.expid, t_delivered=None, reason=None)
                self.flight.expids.add(exp.expid)
                fresh = self.journal.exposure(exp.expid)
                for pt in missing:
                    self.flight.enqueue(fresh, pt.k, pt.n, pt.tar_bytes or 0)
            else:  # part files gone (deleted after delivery): re-pack; parts still held are skipped
                self.journal.mark_repack(exp.expid, t_delivered=None, reason=None)
            self.view.event("warning", "missing-on-receiver", expid=exp.expid, parts=len(missing))
        self.view.event("info", "reconciled", receiver_files=len(held), missing_parts=missing_total)

    def final_count(self) -> tuple[int, int]:
        """End of night: (exposures whose every part the receiver holds, exposures above exp_min)."""
        held = self.receiver_listing()
        expected = [e for e in self.journal.exposures() if e.expnum > self.exp_min]
        done = []
        for exp in expected:
            parts = self.journal.parts(exp.expid)
            if exp.nparts and len(parts) >= exp.nparts and all(
                    pt.tar_name in held and pt.manifest_name in held for pt in parts):
                done.append(exp.expid)
        missing = sorted(e.expid for e in expected if e.expid not in done)
        self.view.event("info", "end-of-night", delivered=len(done), expected=len(expected),
                        missing=",".join(missing) or "none")
        return len(done), len(expected)

    def receiver_listing(self) -> dict[str, int]:
        """{name: size} of the files in the receiver's inbox and its ``delivered_dirs``."""
        t = self.site.transport
        held: dict[str, int] = {}
        for folder in [None, *t.delivered_dirs]:
            if folder is not None and t.kind == "local":
                folder = str(self.site.path(folder))
            held.update(self.retry(lambda f=folder: self.transport.listing(f), "listing", limit=t.retries))
        return held
