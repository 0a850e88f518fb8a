"""One vocabulary for CCD counts: *science CCDs* and *calibration CCDs*, never mixed.

``dwfhpc status``, the demo's summary and the night report all count with :func:`ccd_counts`, so
the three agree. A CCD is counted once (its task row in the state DB), by the kind of its exposure
(``science``, or a calibration frame: bias, flat, dark...) and its state:

* calibrated - products on the shared file system (a calibration frame: filed into the library);
* failed     - gave up after its attempts, with a reason;
* lost       - its job vanished and the retry budget ran out;
* in flight  - queued, submitted or running, plus CCDs an exposure's manifest promises that have
  no task yet (their part has not arrived, or is quarantined).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from ..states import DisplayState, PartState, task_display

GROUPS = ("science", "calibration")
LABELS = {"science": "science CCDs", "calibration": "calibration CCDs"}
STATES = ("calibrated", "failed", "lost", "in_flight")


@dataclass
class CCDCounts:
    calibrated: int = 0
    failed: int = 0
    lost: int = 0
    in_flight: int = 0

    @property
    def total(self) -> int:
        return self.calibrated + self.failed + self.lost + self.in_flight

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}

    def phrase(self, label: str) -> str:
        """``"4 science CCDs: 4 calibrated, 0 failed, 0 lost, 0 in flight"``."""
        return (f"{self.total} {label}: {self.calibrated} calibrated, {self.failed} failed, {self.lost} lost, "
                f"{self.in_flight} in flight")


def _bucket(state: str) -> str:
    """The :class:`CCDCounts` field a task state counts in, from the word it is shown as (:data:`TASK_DISPLAY`)."""
    shown = task_display(state)  # a state this module does not know yet: ValueError, never silently dropped
    if shown is DisplayState.DONE:
        return "calibrated"
    if shown in (DisplayState.QUEUED, DisplayState.RUNNING):
        return "in_flight"
    return str(shown)  # failed, lost


def group_of(kind: str | None) -> str:
    """``science`` for science exposures, ``calibration`` for every calibration frame."""
    return "science" if (kind or "science") == "science" else "calibration"


def tally(ccds: Iterable[tuple[str | None, str]], missing: dict[str, int] | None = None) -> dict[str, CCDCounts]:
    """Counts by group from ``(kind, task state)`` pairs; ``missing`` adds promised CCDs without a task."""
    out = {g: CCDCounts() for g in GROUPS}
    for kind, state in ccds:
        counts = out[group_of(kind)]
        key = _bucket(state)
        setattr(counts, key, getattr(counts, key) + 1)
    for group, n in (missing or {}).items():
        out[group].in_flight += n
    return out


def promised_ccds(part) -> int | None:
    """How many CCDs the exposure of ``part`` holds, from its manifest.

    None when unreadable: missing, damaged, or between the state DB and the parts store (the
    ingest records a part before it moves the files, so a crash never loses one), and for a
    quarantined part, whose row has no manifest (its manifest is untrusted: never read for counts).
    """
    from ..errors import DwfError
    from ..parts import read_manifest

    if not getattr(part, "manifest", None) or getattr(part, "state", None) == PartState.QUARANTINED:
        return None
    try:
        return len(read_manifest(part.manifest).ccds_in_exposure)
    except (DwfError, OSError):  # a missing or damaged manifest only loses the promise
        return None


def ccd_counts(db, night: str | None = None, expids: Iterable[str] | None = None) -> dict[str, CCDCounts]:
    """Science and calibration CCD counts of ``night`` (default all nights), from the state DB.

    ``expids`` restricts the count to those exposures. Uses only the state DB's public methods.
    """
    wanted = set(expids) if expids is not None else None
    tasks = [t for t in db.tasks(night=night) if wanted is None or t.expid in wanted]
    parts = [p for p in db.parts(night=night) if wanted is None or p.expid in wanted]
    have: dict[str, int] = {}
    for t in tasks:
        have[t.expid] = have.get(t.expid, 0) + 1
    missing = {g: 0 for g in GROUPS}
    seen: set[str] = set()
    for p in sorted(parts, key=lambda p: p.state == PartState.QUARANTINED):  # a delivered part's manifest first
        if p.expid in seen:
            continue
        seen.add(p.expid)
        promised = promised_ccds(p)
        if promised is not None and promised > have.get(p.expid, 0):
            missing[group_of(p.kind)] += promised - have.get(p.expid, 0)
    return tally(((t.kind, t.state) for t in tasks), missing)


def counts_dict(counts: dict[str, CCDCounts]) -> dict[str, dict[str, int]]:
    """JSON form: ``{"science": {...}, "calibration": {...}}``."""
    return {g: counts[g].as_dict() for g in GROUPS}
