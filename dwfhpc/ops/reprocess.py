"""Run CCDs again as a new attempt (the seed's ``dwf_prepipe_reproccess``, which only untarred).

What to run again:

* a **list** of part tarballs (one path a line, ``#`` comments, relative paths from the list's
  folder), each verified against the manifest beside it before anything changes. A part already in
  the state DB has its tasks queued again (attempt + 1); if its copy in the parts store is gone or
  damaged, the listed tarball is copied back there first. A part the DB does not know (or only
  knows as quarantined) is copied into the inbox, tarball first and manifest last, so the inbox
  verifies and queues it like any delivery.
* **failed**: every ``failed`` or ``lost`` task (optionally of one night / exposure);
* a **night** (optionally one exposure): every task of it.
* **fallback masters** (``--fallback-masters``, optionally of one night / exposure): the science CCDs
  calibrated with an earlier night's masters while tonight's were not built (their result's
  ``masters.fallback``), once tonight's bias and flat of the CCD exist; they run again with those.
  A CCD whose tonight's masters are still missing is left alone, with that reason.

Tasks already queued or in progress are left as they are. Then, when no ``dwfhpc ingest`` holds
the state DB's lock, one ingest pass submits the work through the site's executor and (by
default) waits until it is collected; otherwise the running ingest submits it at its next poll.

Attempts: a requeued task starts a new retry budget (``tasks.first_attempt``): requeued at attempt
``a``, the collector (this pass's or a running ingest's) may take it to ``a + max_attempts - 1``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import atomic_copy, sha256_file
from ..config import SiteSettings
from ..errors import DwfError
from ..ingest import Ingest, IngestOptions, Step
from ..layout import manifest_for_tar, parse_part_stem, part_stem
from ..locking import FileLock
from ..parts import Manifest, verify_part
from ..statedb import StateDB, TaskRow
from ..states import TASK_ACTIVE, TASK_FINAL, PartState, TaskState
from .lookup import match_exposure

REASON = "reprocess requested"
Key = tuple[str, int]


@dataclass
class ListedPart:
    """A verified tarball from a reprocess list."""

    tar: Path
    manifest_path: Path
    manifest: Manifest
    stem: str


@dataclass
class Outcome:
    """What a reprocess did; ``tasks`` counts the selected tasks' states at the end."""

    state_db: str
    selection: str
    requeued: list[dict] = field(default_factory=list)  # part, ccd, attempt (the new one), was (previous state)
    skipped: list[dict] = field(default_factory=list)  # part, ccd, reason (already queued / in progress)
    delivered: list[str] = field(default_factory=list)  # tarballs copied into the inbox (parts new to the DB)
    restored: list[str] = field(default_factory=list)  # parts-store copies replaced by the listed tarball
    ingest_running: bool = False
    submitted: bool = False  # an ingest pass of ours submitted the work
    waited: bool = False  # ... and waited until it was collected
    tasks: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- selection
def read_list(path: Path) -> list[Path]:
    """Tarball paths from a reprocess list (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DwfError("reprocess list does not exist", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DwfError(f"cannot read the reprocess list ({exc})", path) from None
    out: list[Path] = []
    for n, line in enumerate(lines, start=1):
        text = line.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        if not text.endswith(".tar"):
            raise DwfError(f"line {n}: {text!r} is not a part tarball (<expid>.p<k>of<K>.tar)", path)
        p = Path(text).expanduser()
        out.append(p if p.is_absolute() else (path.parent / p))
    if not out:
        raise DwfError("the reprocess list names no tarballs", path)
    return list(dict.fromkeys(p.resolve() for p in out))


def check_tarballs(db: StateDB, tars: Iterable[Path]) -> list[ListedPart]:
    """Verify every listed tarball against its manifest (and against the DB); nothing is changed."""
    out = []
    for tar in tars:
        if not tar.is_file():
            raise DwfError("tarball does not exist" if not tar.exists() else "not a file", tar)
        stem = tar.name[: -len(".tar")]
        if parse_part_stem(stem) is None:
            raise DwfError("not a part name (<expid>.p<k>of<K>.tar)", tar)
        manifest_path = manifest_for_tar(tar)
        if not manifest_path.exists():
            raise DwfError(f"its manifest {manifest_path.name} is not beside it", tar)
        manifest = verify_part(tar, manifest_path)  # IntegrityError names the file and the problem
        if part_stem(manifest.expid, manifest.part, manifest.parts) != stem:
            raise DwfError(f"the file name says {stem} but its manifest describes "
                           f"{part_stem(manifest.expid, manifest.part, manifest.parts)}", tar)
        known = db.part(stem)
        if known is not None and known.state != PartState.QUARANTINED and known.sha256 != manifest.tar_sha256:
            raise DwfError("a different part with this name was ingested (sha256 differs from the state DB's)", tar)
        out.append(ListedPart(tar, manifest_path, manifest, stem))
    return out


def _listing(values: list[str], limit: int = 12) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "") if values else "none"


def calibrated_with_fallback(task: TaskRow) -> bool:
    """A done science CCD whose result says it was calibrated with an earlier night's masters."""
    masters = task.result.masters if task.result else None
    return task.state == TaskState.DONE and task.kind == "science" and masters is not None and masters.fallback


def tonights_masters(site: SiteSettings, db: StateDB, task: TaskRow) -> bool:
    """Tonight's own master bias and flat (of the CCD's filter) exist for this task's CCD."""
    from ..calibrate.masters import choose_master

    part = db.part(task.part)
    root = site.path(site.calibration.masters)
    return (choose_master(root, "bias", task.night, task.ccd, max_age_days=0) is not None
            and choose_master(root, "flat", task.night, task.ccd, part.filter if part else None,
                              max_age_days=0) is not None)


def select_tasks(db: StateDB, *, failed: bool = False, night: str | None = None,
                 exposure: str | None = None, fallback_masters: bool = False) -> list[TaskRow]:
    """The tasks of a night / exposure (``failed``: only failed and lost ones; ``fallback_masters``: only done
    science CCDs calibrated with an earlier night's masters); unknown nights / exposures are errors."""
    if night is not None:
        known = sorted({t.night for t in db.tasks() if t.night})
        if night not in known:
            raise DwfError(f"no data for night {night} (nights: {_listing(known)})", db.path)
    expid = None
    if exposure is not None:
        expids = sorted({t.expid for t in db.tasks(night=night)})
        expid = match_exposure(exposure, expids)
        if expid is None:
            where = f" of night {night}" if night else ""
            raise DwfError(f"no exposure {exposure}{where} in the state DB (exposures: {_listing(expids)})", db.path)
    states = (TaskState.FAILED, TaskState.LOST) if failed else ()
    tasks = db.tasks(*states, night=night, expid=expid)
    return [t for t in tasks if calibrated_with_fallback(t)] if fallback_masters else tasks


# --------------------------------------------------------------------------- changes
def requeue_tasks(db: StateDB, tasks: list[TaskRow], outcome: Outcome) -> dict[Key, int]:
    """Queue final tasks again (attempt + 1); returns their new first attempt by (part, CCD)."""
    first: dict[Key, int] = {}
    touched: dict[str, list[int]] = {}
    with db.transaction():
        for t in tasks:
            if t.state not in TASK_FINAL:
                why = "already queued" if t.state == TaskState.QUEUED else f"in progress ({t.state})"
                outcome.skipped.append({"part": t.part, "ccd": t.ccd, "reason": why})
                continue
            db.requeue(t.part, t.ccd, attempt=t.attempt + 1, reason=REASON, new_budget=True)
            first[(t.part, t.ccd)] = t.attempt + 1
            touched.setdefault(t.part, []).append(t.ccd)
            outcome.requeued.append({"part": t.part, "ccd": t.ccd, "attempt": t.attempt + 1, "was": t.state})
    for part, ccds in touched.items():
        db.refresh_part_state(part)
        db.event("info", f"{part}: {REASON}: CCD {', '.join(map(str, sorted(ccds)))} queued again", part)
    return first


def _store_copy_ok(path: Path, sha256: str | None, size: int | None) -> bool:
    try:
        return path.is_file() and (size is None or path.stat().st_size == size) and sha256_file(path) == sha256
    except OSError:
        return False


def deliver_listed(site: SiteSettings, db: StateDB, listed: list[ListedPart],
                   outcome: Outcome) -> tuple[dict[Key, int], set[str]]:
    """Known parts: restore the store copy if needed and requeue; new parts: copy into the inbox.

    Returns the requeued tasks' new first attempts and the stems delivered into the inbox.
    """
    inbox = site.path(site.ingest.inbox)
    first: dict[Key, int] = {}
    new: set[str] = set()
    for lp in listed:
        known = db.part(lp.stem)
        if known is None or known.state == PartState.QUARANTINED:
            dest = inbox / lp.tar.name
            if lp.tar.resolve() != dest.resolve():
                atomic_copy(lp.tar, dest)  # tarball first, manifest last: the inbox acts on the manifest
                atomic_copy(lp.manifest_path, inbox / lp.manifest_path.name)
            outcome.delivered.append(str(lp.tar))
            new.add(lp.stem)
            db.event("info", f"{lp.stem}: {REASON}: delivered into the inbox from {lp.tar}", lp.stem)
            continue
        stored_tar, stored_manifest = Path(known.tar), Path(known.manifest)
        if lp.tar.resolve() != stored_tar.resolve() and not _store_copy_ok(stored_tar, known.sha256, known.bytes):
            atomic_copy(lp.tar, stored_tar)
            atomic_copy(lp.manifest_path, stored_manifest)
            outcome.restored.append(lp.stem)
            db.event("info", f"{lp.stem}: parts-store copy restored from {lp.tar}", lp.stem)
        elif not stored_manifest.exists():
            atomic_copy(lp.manifest_path, stored_manifest)
        first.update(requeue_tasks(db, db.tasks(part=lp.stem), outcome))
    return first, new


# --------------------------------------------------------------------------- running it
def _selected(db: StateDB, keys: set[Key], stems: set[str]) -> list[TaskRow]:
    return [t for t in db.tasks() if (t.part, t.ccd) in keys or t.part in stems]


def _counts(tasks: list[TaskRow]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tasks:
        out[t.state] = out.get(t.state, 0) + 1
    return dict(sorted(out.items()))


def run_pass(site: SiteSettings, keys: set[Key], stems: set[str], *,
             wait: bool = True, progress: Callable[[str], None] = print, stop: threading.Event | None = None,
             timeout: float | None = None) -> bool:
    """One ingest pass (inbox, submit; with ``wait`` until idle), as job arrays whatever the night's mode (a
    running night ingest, on warm workers or not, takes the work over instead). False when an ingest holds the lock."""
    try:
        ingest = Ingest(site.with_changes("ingest", {"workers": 0}), IngestOptions(report=True))
    except DwfError:
        if FileLock.held(site.path(site.ingest.state_db)):  # an ingest started meanwhile: it takes over
            return False
        raise
    deadline = time.monotonic() + timeout if timeout else None
    last: dict[str, int] | None = None

    def observe(step: Step) -> None:  # say how the selected tasks stand whenever that changes
        nonlocal last
        if last is not None and step.collected is None and not (step.counts["accepted"] or step.counts["submitted"]):
            return  # an inbox scan that changed nothing of ours
        counts = _counts(_selected(ingest.db, keys, stems))
        if counts != last:
            progress("reprocess: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "waiting for the inbox"))
            last = counts

    def until() -> bool:
        if stop is not None and stop.is_set():
            return True
        if deadline and time.monotonic() > deadline:
            progress(f"reprocess: stopped waiting after {timeout:g} s; `dwfhpc ingest` collects the rest")
            return True
        return False

    try:
        ingest.run(once=not wait, drain=wait, observer=observe, until=until)  # writes the night reports at the end
        return True
    finally:
        ingest.close()


def reprocess(site: SiteSettings, *, list_path: Path | None = None, failed: bool = False, night: str | None = None,
              exposure: str | None = None, fallback_masters: bool = False, submit: bool = True, wait: bool = True,
              progress: Callable[[str], None] = print, stop: threading.Event | None = None,
              timeout: float | None = None) -> Outcome:
    """Select, check, requeue (or deliver), then run a pass unless an ingest is running. See the module doc."""
    if list_path is not None and (failed or night or exposure or fallback_masters):
        raise DwfError("give either a LIST of tarballs or --failed / --fallback-masters / --night / --exposure, "
                       "not both")
    if failed and fallback_masters:
        raise DwfError("give --failed or --fallback-masters, not both (a fallback CCD is done, not failed)")
    if list_path is None and not (failed or night or exposure or fallback_masters):
        raise DwfError("nothing selected: give a LIST of tarballs, --failed, --fallback-masters, --night N "
                       "or --exposure E")
    db_path = site.path(site.ingest.state_db)
    tars = read_list(list_path) if list_path is not None else None
    if not db_path.exists():
        raise DwfError("no state DB here (dwfhpc ingest has not run with this config)", db_path)
    selection = ("list" if tars is not None else "failed" if failed else "fallback-masters" if fallback_masters
                 else "night" if night else "exposure")
    outcome = Outcome(state_db=str(db_path), selection=selection)
    with StateDB(db_path) as db:
        if tars is not None:
            listed = check_tarballs(db, tars)  # every check before the first change
            first, stems = deliver_listed(site, db, listed, outcome)
            keys = {(t.part, t.ccd) for lp in listed if lp.stem not in stems for t in db.tasks(part=lp.stem)}
        else:
            tasks = select_tasks(db, failed=failed, night=night, exposure=exposure, fallback_masters=fallback_masters)
            if fallback_masters:  # only once tonight's exist: else it would run with the same fallback again
                ready = {(t.part, t.ccd) for t in tasks if tonights_masters(site, db, t)}
                outcome.skipped += [{"part": t.part, "ccd": t.ccd,
                                     "reason": f"tonight's ({t.night}) master bias and flat of this CCD are not built yet"}
                                    for t in tasks if (t.part, t.ccd) not in ready]
                tasks = [t for t in tasks if (t.part, t.ccd) in ready]
            requeue_tasks(db, tasks, outcome)
            stems, keys = set(), {(t.part, t.ccd) for t in tasks}
        pending = any(t.state == TaskState.QUEUED or t.state in TASK_ACTIVE for t in _selected(db, keys, stems))
    outcome.ingest_running = FileLock.held(db_path)
    if submit and not outcome.ingest_running and (pending or stems):
        ran = run_pass(site, keys, stems, wait=wait, progress=progress, stop=stop, timeout=timeout)
        outcome.ingest_running = not ran
        outcome.submitted, outcome.waited = ran, ran and wait
    with StateDB(db_path) as db:
        outcome.tasks = _counts(_selected(db, keys, stems))
    return outcome
