"""Find raw files that are complete, by polling (safe on NFS, where inotify sees nothing).

A file is complete when its size has not changed for ``stable_seconds`` and its FITS structure is
whole (:func:`~dwfhpc.fitsio_utils.check_complete`: every HDU present with all its data). Names that
are still temporaries (dotfiles, ``*.tmp``, ``*.part``) are ignored. A file still incomplete or
unreadable ``incomplete_timeout`` seconds after it was first seen is recorded as failed with the
reason and never looked at again. Exposure identity comes from the headers; an HSC visit (one
file per CCD) is complete when all its expected CCD files are, or when no new file of it has
appeared for ``visit_quiet_seconds``.

Nothing from a raw file reaches a part name or a remote command unchecked: a file name with a
control character or undecodable bytes, and an exposure whose identity (expid, expnum, night,
filter, field, CCDs...) does not pass the receiver's own patterns (:mod:`dwfhpc.parts.schema`),
is failed at once with the reason, recorded in the journal and never packed or sent.
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DwfError
from ..fitsio_utils import check_complete
from ..instruments import exposure_info, instrument_for
from ..parts.schema import SchemaError, check_exposure_identity
from ..states import PushExposureState
from .journal import Journal

TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".swp")
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f\\]")


def name_problem(name: str) -> str | None:
    """Why a raw file's name is refused (control characters, a backslash, undecodable bytes), or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    if _BAD_NAME.search(name):
        return f"file name {name!r} has a control character or a backslash"
    return None


def is_temporary(name: str) -> bool:
    """Names writers use while a file is being written."""
    return name.startswith(".") or name.endswith(TEMP_SUFFIXES) or name.startswith("~")


@dataclass
class _Tracked:
    size: int
    mtime: float
    stable_since: float
    first_seen: float
    last_error: str | None = None


@dataclass
class PollResult:
    """What one poll found: newly complete exposures (expids), newly failed files (path, reason)."""

    ready: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    pending: int = 0  # files seen but not yet settled, plus visits still waiting for CCD files


class Watcher:
    """Poll ``raw_dir`` for files matching ``patterns``; settle each into complete or failed."""

    def __init__(self, raw_dir: Path, journal: Journal, *, patterns: list[str], stable_seconds: float,
                 incomplete_timeout: float, visit_quiet_seconds: float = 30.0, clock=time.time):
        self.raw_dir = Path(raw_dir)
        self.journal = journal
        self.patterns = patterns
        self.stable_seconds = stable_seconds
        self.incomplete_timeout = incomplete_timeout
        self.visit_quiet_seconds = visit_quiet_seconds
        self.clock = clock
        self._tracked: dict[str, _Tracked] = {}
        self._settled = journal.settled_files()
        self._visit_last: dict[str, float] = {}  # expid -> when its latest CCD file completed
        self._expected: dict[str, int] = {}

    def _candidates(self) -> list[Path]:
        try:
            entries = list(os.scandir(self.raw_dir))
        except FileNotFoundError:
            return []
        out = []
        for e in entries:
            if is_temporary(e.name) or not any(fnmatch.fnmatch(e.name, p) for p in self.patterns):
                continue
            if e.is_file(follow_symlinks=True):
                out.append(Path(e.path))
        return sorted(out)

    def poll(self) -> PollResult:
        now = self.clock()
        result = PollResult()
        for path in self._candidates():
            key = str(path)
            if key in self._settled:
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                self._tracked.pop(key, None)
                continue
            bad_name = name_problem(path.name)
            if bad_name:
                self._fail(key, path, bad_name, result)
                continue
            t = self._tracked.get(key)
            if t is None:
                first = self.journal.file_seen(key, st.st_size, now)
                t = self._tracked[key] = _Tracked(st.st_size, st.st_mtime, now, first)
            elif (st.st_size, st.st_mtime) != (t.size, t.mtime):
                t.size, t.mtime, t.stable_since = st.st_size, st.st_mtime, now
                self.journal.file_seen(key, st.st_size, now)
            if now - t.stable_since >= self.stable_seconds:
                try:
                    check_complete(path)
                    info = exposure_info(path)
                    check_exposure_identity(info, path)
                except SchemaError as exc:  # the file is complete; what it says is unusable: it will not change
                    self._fail(key, path, f"refused: {exc.problem}", result)
                    continue
                except DwfError as exc:
                    t.last_error = exc.problem
                except OSError as exc:
                    t.last_error = f"cannot read ({exc.strerror})"
                else:
                    self._settle_complete(key, st.st_size, info, now, result)
                    continue
            if now - t.first_seen >= self.incomplete_timeout:
                reason = (f"still incomplete after {self.incomplete_timeout:g} s: {t.last_error}" if t.last_error
                          else f"size still changing after {self.incomplete_timeout:g} s")
                self._fail(key, path, reason, result)
                continue
            result.pending += 1
        for expid in list(self._visit_last):
            if self._visit_done(expid, now):
                self._visit_last.pop(expid)
                self.journal.exposure_complete(expid, now)
                result.ready.append(expid)
            else:
                result.pending += 1
        return result

    def _fail(self, key: str, path: Path, reason: str, result: PollResult) -> None:
        """Record ``path`` as failed for good (journal + event); it is never looked at again."""
        safe_key = key.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        if key not in self._tracked:
            self.journal.file_seen(safe_key, 0, self.clock())
        self.journal.file_failed(safe_key, reason)
        self.journal.event("error", f"{path.name!r}: {reason}" if safe_key != key else f"{path.name}: {reason}")
        self._settled.add(key)
        self._tracked.pop(key, None)
        result.failed.append((key, reason))

    def _settle_complete(self, key: str, size: int, info, now: float, result: PollResult) -> None:
        self.journal.file_complete(key, size, info.expid, now)
        self.journal.add_file_to_exposure(info, key, now)
        self._settled.add(key)
        self._tracked.pop(key, None)
        if info.instrument == "hsc":
            self._visit_last[info.expid] = now
            if info.expid not in self._expected:
                self._expected[info.expid] = len(instrument_for("hsc").good_ccds)
        else:
            self.journal.exposure_complete(info.expid, now)
            result.ready.append(info.expid)

    def _visit_done(self, expid: str, now: float) -> bool:
        exp = self.journal.exposure(expid)
        if exp is None:
            return False
        if len(exp.files) >= self._expected.get(expid, 1):
            return True
        # files of this visit not yet complete keep it open; otherwise wait for a quiet period
        return now - self._visit_last[expid] >= self.visit_quiet_seconds and not self._visit_has_pending(expid)

    def _visit_has_pending(self, expid: str) -> bool:
        visit = expid.split("_", 1)[-1]
        return any(Path(k).name.startswith(f"HSCA{int(visit):06d}") for k in self._tracked)

    def recover_visits(self) -> None:
        """After a restart: HSC visits seen but not yet complete go back under watch."""
        for exp in self.journal.exposures(PushExposureState.SEEN):
            self._visit_last[exp.expid] = exp.t_seen or self.clock()
            self._expected[exp.expid] = len(instrument_for(exp.instrument).good_ccds)
