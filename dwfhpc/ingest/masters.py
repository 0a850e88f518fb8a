"""Masters as the night goes: once a night's bias and flat tasks are all final, build its masters.

Dusk never holds science that can be calibrated: while tonight's masters are not built (or could
not be), a science CCD whose bias and flat exist from an earlier night at most ``max_age_days``
(``calibration.masters_max_age_days``) old is calibrated with those at once (the seed's
``copycals``); its result and product header say so, and ``dwfhpc reprocess --fallback-masters``
runs it again once tonight's exist. Only a CCD with no usable masters at all (:func:`masters_usable`)
waits for the build. A night with no calibration frames uses the earlier nights' masters the same
way. The build runs in a thread so the ingest loop keeps collecting.

One bad delivery must not ruin the night: the build leaves out a frame whose header says it is
not what it was filed as, or whose size or sections are not a CCD of the instrument (checked
before any pixel is allocated), records each such frame (a warning event) and builds from the
rest (at least ``min_frames``). Whatever else goes wrong in a build (any exception) is recorded
in the ``nights`` table and as an error event, and the same inputs are not built again: only a
calibration frame finishing after that build starts a new one.

Science of a night whose masters could not be built does not wait for ever: CCDs with an earlier
night's masters go on with them; for the others the ``fallback`` hook (``fallback(night, reason)``:
make masters available some other way and say how, or None) is asked once; if it cannot help and
science requires masters, those queued science CCDs end ``failed`` with the named reason
(``dwfhpc reprocess --failed`` runs them again once masters exist), so ``--drain`` ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..calibrate import build_night_masters
from ..calibrate.masters import DEFAULT_MAX_AGE_DAYS, choose_master
from ..statedb import StateDB, TaskRow
from ..states import TaskState

log = logging.getLogger(__name__)

#: ``fallback(night, reason)``: masters for ``night`` from elsewhere; returns what it did, or None if it could not
Fallback = Callable[[str, str], "str | None"]


def masters_usable(masters: Path, night: str, ccd: int, filter_: str | None,
                   max_age_days: int = DEFAULT_MAX_AGE_DAYS) -> bool:
    """A science CCD of ``night`` can be calibrated now: a master bias and a flat of its filter exist, tonight's
    or an earlier night's at most ``max_age_days`` old (the node's rule, :func:`dwfhpc.node.run.find_masters`)."""
    return (choose_master(masters, "bias", night, ccd, max_age_days=max_age_days) is not None
            and choose_master(masters, "flat", night, ccd, filter_, max_age_days=max_age_days) is not None)


class UsableMasters:
    """:func:`masters_usable` for queued science tasks (their filter from their part), memoised for one poll."""

    def __init__(self, db: StateDB, masters: Path, max_age_days: int):
        self.db, self.masters, self.max_age_days = db, Path(masters), max_age_days
        self._filters: dict[str, str | None] = {}
        self._seen: dict[tuple[str, int, str | None], bool] = {}

    def __call__(self, task: TaskRow) -> bool:
        if task.part not in self._filters:
            part = self.db.part(task.part)
            self._filters[task.part] = part.filter if part else None
        key = (task.night, task.ccd, self._filters[task.part])
        if key not in self._seen:
            self._seen[key] = masters_usable(self.masters, *key, self.max_age_days)
        return self._seen[key]


class MastersKeeper:
    def __init__(self, db: StateDB, library: Path, masters: Path, enabled: bool = True,
                 on_built: Callable[[], None] | None = None, *, min_frames: int = 1, require_masters: bool = True,
                 fallback: Fallback | None = None, max_age_days: int = DEFAULT_MAX_AGE_DAYS):
        self.db, self.library, self.masters, self.enabled = db, Path(library), Path(masters), enabled
        self.on_built = on_built  # told after each build (warm workers copy the new masters)
        self.min_frames = max(1, int(min_frames))  # good frames a master needs (bad ones are left out)
        self.require_masters = require_masters  # science without masters fails (else: overscan only)
        self.fallback = fallback
        self.max_age_days = max(0, int(max_age_days))  # an earlier night's masters serve science this long (0: never)
        self._thread: threading.Thread | None = None
        self._building: str | None = None
        self._rescued: dict[str, str | None] = {}  # night -> what the fallback did (None: it could not)

    def _stale(self) -> dict[str, dict]:
        out = {}
        for night, c in self.db.calibration_nights().items():
            built = self.db.masters_built(night)
            c["stale"] = bool(c["last_done"]) and (built is None or built < c["last_done"])
            out[night] = c
        return out

    def unbuilt_nights(self) -> dict[str, str]:
        """Nights whose latest build made no master at all (and no newer frame asks for another): night -> reason."""
        stale = self._stale()
        out = {}
        for r in self.db.rows("SELECT night, masters, reason FROM nights WHERE masters=0 AND reason IS NOT NULL"):
            c = stale.get(r["night"])
            if c is not None and not c["pending"] and not c["stale"] and r["night"] != self._building:
                out[r["night"]] = r["reason"]
        return out

    def _without_masters(self) -> dict[str, str]:
        """Nights whose science cannot get masters (build failed, the fallback could not help): night -> reason."""
        if not self.enabled or not self.require_masters:
            return {}
        out = {}
        for night, reason in self.unbuilt_nights().items():
            if night not in self._rescued:
                self._rescued[night] = self._ask_fallback(night, reason)
            if self._rescued[night] is None:
                out[night] = reason
        return out

    def _ask_fallback(self, night: str, reason: str) -> str | None:
        if self.fallback is None:
            return None
        try:
            done = self.fallback(night, reason)
        except Exception as exc:  # a hook must not stop the night either
            log.error("night %s: masters fallback failed: %s: %s", night, type(exc).__name__, exc, extra={"part": None})
            return None
        if done:
            log.warning("night %s: masters not built (%s); science goes on with %s", night, reason, done,
                        extra={"part": None})
        return done

    def usable(self) -> UsableMasters:
        """Whether a queued science task has masters to be calibrated with now (tonight's or an earlier night's)."""
        return UsableMasters(self.db, self.masters, self.max_age_days)

    def blocked_nights(self) -> set[str]:
        """Nights whose masters are not ready: calibration tasks pending, masters not yet rebuilt, or (until
        :meth:`update` fails them) queued science of a night that cannot get masters. Its science CCDs with an
        earlier night's usable masters go on all the same (:meth:`usable`; the submitter holds only the others)."""
        if not self.enabled:
            return set()
        blocked = {n for n, c in self._stale().items() if c["pending"] or c["stale"] or n == self._building}
        for night in self._without_masters():
            if any(t.kind == "science" for t in self.db.tasks(TaskState.QUEUED, night=night)):
                blocked.add(night)
        return blocked

    def fail_science_without_masters(self) -> int:
        """End the queued science CCDs of nights that cannot get masters as ``failed``, naming why; returns how many."""
        failed = 0
        usable = self.usable()
        for night, reason in self._without_masters().items():
            tasks = [t for t in self.db.tasks(TaskState.QUEUED, night=night) if t.kind == "science" and not usable(t)]
            within = f"none within {self.max_age_days} days" if self.max_age_days else "no fallback (age limit 0)"
            why = f"no masters for night {night}: {reason}; {within}"
            for t in tasks:
                self.db.fail(t.part, t.ccd, why)
            for part in sorted({t.part for t in tasks}):
                self.db.refresh_part_state(part)
                ccds = ", ".join(str(t.ccd) for t in tasks if t.part == part)
                log.error("%s CCD %s: failed without calibration: %s", part, ccds, why, extra={"part": part})
            failed += len(tasks)
        return failed

    def update(self) -> None:
        """Start a build for the first night whose calibrations are complete and newer than its masters;
        fail science that cannot get masters."""
        if not self.enabled:
            return
        self.fail_science_without_masters()
        if self._thread and self._thread.is_alive():
            return
        for night, c in sorted(self._stale().items()):
            if not c["pending"] and c["stale"]:
                self._building = night
                self._rescued.pop(night, None)  # a new build: ask the fallback again if it fails too
                self._thread = threading.Thread(target=self._build, args=(night,), name=f"masters-{night}", daemon=True)
                self._thread.start()
                return

    def _build(self, night: str) -> None:
        """Build ``night``'s masters; any failure is recorded (nights table + event), never left to kill the thread."""
        started = time.time()
        notes: list[str] = []

        def rejected(frame: Path, why: str) -> None:
            notes.append(f"left out {frame.name}: {why}")
            log.warning("night %s: %s left out of the masters: %s", night, frame.name, why, extra={"part": None})

        def not_built(master: Path, why: str) -> None:
            notes.append(f"{master.name} not built: {why}")
            log.error("night %s: %s not built: %s", night, master.name, why, extra={"part": None})

        try:
            made = build_night_masters(self.library, self.masters, night, progress=lambda s: None,
                                       min_frames=self.min_frames, on_reject=rejected, on_fail=not_built)
            self.db.set_masters_built(night, started, len(made), "; ".join(notes) or None)
            if self.on_built is not None:
                self.on_built()
            log.info("night %s: %d masters built in %.1f s%s", night, len(made), time.time() - started,
                     f" ({len(notes)} problem(s))" if notes else "", extra={"part": None})
        except Exception as exc:  # anything: recorded, and not retried until new frames arrive
            reason = str(exc) if str(exc) else type(exc).__name__
            if not isinstance(exc, (OSError, ValueError)) and type(exc).__module__ != "dwfhpc.errors":
                reason = f"{type(exc).__name__}: {reason}"
            try:
                self.db.set_masters_built(night, started, 0, reason)
            except Exception as db_exc:  # the DB itself failed: say so in the log at least
                log.error("night %s: masters failure not recorded: %s", night, db_exc)
            log.error("night %s: masters not built: %s", night, reason, extra={"part": None})
        finally:
            self._building = None

    def busy(self) -> bool:
        """A build is running."""
        return bool(self._thread and self._thread.is_alive())

    def wait(self, timeout: float | None = None) -> None:
        if self._thread:
            self._thread.join(timeout)
