"""The inbox: complete, verified parts move into the parts store and are queued; bad ones are quarantined.

A part is acted on only when its manifest is in the inbox and its tarball matches the manifest
(size, sha256, member list). A tarball still short of its size waits up to ``arrival_grace``
seconds; past that, or on any integrity problem, the part goes to ``quarantine/<stem>.<time>/``
(``.<n>`` added when that folder exists already, so two bad copies never share one) with
``reason.txt`` and the reason is recorded in the state DB and logged. A part seen before (same name,
same sha256) is a duplicate delivery: it is not queued again. The DB record is written before the
files move, so a crash in between is completed on the next scan, never lost.

Before anything else the manifest passes the schema (:mod:`dwfhpc.parts.schema`: every field typed,
bounded and matched against its pattern, the tar and member names against expid/part/CCD, the file's
own name against its content, the CCD headers it carries against its identity); both files must be
regular files, judged by ``lstat`` (a symlink of any kind, dangling or looping too, a FIFO, device or
folder is quarantined as it is: the link itself moves, it is never followed or opened). A failure
quarantines the part with the field named. The part's place in the store is built by
:func:`dwfhpc.layout.store_paths` (checked to stay inside it).

Whatever one delivery holds stays in that delivery: every exception while handling one entry ends in
its quarantine with the reason, except an :class:`OSError` (a file vanished, a read failed), which is
tried again on the next scans and quarantined after ``retry_scans`` of them. A tarball whose manifest
never comes is quarantined after ``arrival_grace``; a tarball larger than its manifest says is
quarantined at once, never hashed.

The tarballs of complete parts are hashed in a pool of threads (hashlib releases the GIL), at least
two, so one slow part does not hold the pool; parts are accepted one by one, oldest first, each as soon
as its own hash is done. A scan waits for the hashes it started itself, at most ``hash_wait`` seconds in
all; a hash still running then carries on in the pool, the parts behind it go ahead, and a later scan
takes it when it is done (never waiting for it again), so every scan ends in bounded time whatever the
inbox holds.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DwfError, IntegrityError
from ..layout import manifest_for_tar, parse_part_stem, quarantine_dir, store_paths, tar_for_manifest
from ..node.crosscheck import check_manifest_headers
from ..parts import read_manifest, verify_part
from ..statedb import StateDB
from ..states import PartState

log = logging.getLogger(__name__)
_MANIFEST = ".manifest.json"
_TAR = ".tar"
_TRANSIENT = (OSError, sqlite3.OperationalError)  # may clear by itself: tried again, for a bounded number of scans


@dataclass
class ScanResult:
    accepted: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


def _regular(path: Path) -> bool | None:
    """True for a regular file, False for anything else (symlink, FIFO, device, folder), None when absent."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return None


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """What tells a file from its replacement (device, inode, size, mtime), without following links."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _printable(text: str) -> str:
    """``text`` with undecodable bytes replaced, so SQLite and the log take it."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _move(src: Path, dest: Path) -> None:
    """Move ``src`` itself (a symlink stays a link, never followed) to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # only another file system is worth a copy
            raise
        shutil.move(str(src), str(dest))


@dataclass
class _Hash:
    """A tarball being verified in the pool, and what its files were when it started."""

    future: Future
    key: tuple
    scan: int  # the scan that started it


class Inbox:
    def __init__(self, inbox: Path, store: Path, quarantine: Path, db: StateDB, *, mem_gb: float, time_minutes: int,
                 arrival_grace: float = 120.0, verify_threads: int = 4, retry_scans: int = 10,
                 hash_wait: float = 1.0):
        self.inbox, self.store, self.quarantine = Path(inbox), Path(store), Path(quarantine)
        self.db = db
        self.mem_gb, self.time_minutes = mem_gb, time_minutes
        self.arrival_grace = arrival_grace
        self.retry_scans = max(1, retry_scans)
        self.hash_wait = hash_wait
        self._first_seen: dict[str, float] = {}  # part stem -> first scan that saw it short or missing
        self._orphans: dict[str, float] = {}  # tarball name -> first scan that saw it without a manifest
        self._tries: dict[str, int] = {}  # part stem -> scans in a row that failed with a transient error
        self._hashing: dict[Path, _Hash] = {}
        self._scans = 0
        self._pool = ThreadPoolExecutor(max(2, verify_threads), thread_name_prefix="verify") if verify_threads else None

    # ---------------------------------------------------------------- scan
    def scan(self, now: float | None = None, on_accepted: Callable[[str], None] | None = None) -> ScanResult:
        """Look at every manifest in the inbox once, oldest first; ``on_accepted(stem)`` after each queued part."""
        started = time.monotonic()
        now = now or time.time()
        out = ScanResult()
        manifests, tars = self._listing()
        present = {p.name[: -len(_MANIFEST)] for _, p in manifests}
        self._scans += 1
        self._hash_ahead([p for _, p in manifests])
        deadline = started + self.hash_wait
        for ctime, manifest_path in manifests:
            h = self._hashing.get(manifest_path)
            if h is not None and not h.future.done():
                if h.scan == self._scans:  # started by this scan: oldest first, within the scan's budget
                    wait([h.future], timeout=max(0.0, deadline - time.monotonic()))
                if not h.future.done():  # still hashing (a slow one never holds the parts behind it again)
                    out.waiting.append(manifest_path.name[: -len(_MANIFEST)])
                    continue
            self._handle(manifest_path, min(ctime, now), now, out, on_accepted)
        self._orphan_tarballs(tars, present, now, out)
        for seen in (self._first_seen, self._tries):  # forget parts no longer in the inbox
            for stem in [s for s in seen if s not in present]:
                del seen[stem]
        for path in [p for p in self._hashing if p.name[: -len(_MANIFEST)] not in present]:
            del self._hashing[path]
        return out

    def _listing(self) -> tuple[list[tuple[float, Path]], dict[str, Path]]:
        """Manifest-named entries (by ``lstat`` ctime, oldest first) and tarball-named entries of the inbox."""
        manifests: list[tuple[float, Path]] = []
        tars: dict[str, Path] = {}
        try:
            with os.scandir(self.inbox) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            return manifests, tars
        except OSError as exc:
            log.error("inbox %s cannot be listed: %s", self.inbox, exc)
            return manifests, tars
        for entry in entries:
            name = entry.name
            if name.endswith(_MANIFEST):
                try:
                    ctime = entry.stat(follow_symlinks=False).st_ctime
                except FileNotFoundError:
                    continue  # moved away meanwhile
                except OSError:
                    ctime = 0.0  # handled (and named) by _handle
                manifests.append((ctime, Path(entry.path)))
            elif name.endswith(_TAR) and not name.startswith("."):  # rsync's temporary names start with '.'
                tars[name[: -len(_TAR)]] = Path(entry.path)
        manifests.sort()
        return manifests, tars

    def _handle(self, manifest_path: Path, t_inbox: float, now: float, out: ScanResult,
                on_accepted: Callable[[str], None] | None) -> None:
        """One part, whatever happens: an exception ends in its quarantine (transient ones after ``retry_scans``)."""
        stem = manifest_path.name[: -len(_MANIFEST)]
        before = len(out.accepted)
        h = self._hashing.pop(manifest_path, None)
        try:
            self._one(stem, manifest_path, t_inbox, now, out, h)
        except _TRANSIENT as exc:
            tries = self._tries[stem] = self._tries.get(stem, 0) + 1
            if tries < self.retry_scans:
                log.warning("%r: not handled this scan (%d of %d), tried again: %s", stem, tries, self.retry_scans,
                            exc, extra={"part": _printable(stem)})  # the daemon's log handler makes it an event
                return
            self._quarantine_safely(stem, manifest_path, f"could not be handled in {tries} scans in a row "
                                    f"({type(exc).__name__}: {exc})", t_inbox, out)
        except Exception as exc:  # noqa: BLE001 - one delivery's trouble stays in that delivery
            problem = exc.problem if isinstance(exc, DwfError) else f"could not be handled ({type(exc).__name__}: {exc})"
            self._quarantine_safely(stem, manifest_path, problem, t_inbox, out)
        else:
            self._tries.pop(stem, None)
        if on_accepted and len(out.accepted) > before:
            on_accepted(stem)

    def _quarantine_safely(self, stem: str, manifest_path: Path, reason: str, t_inbox: float,
                           out: ScanResult) -> None:
        """Quarantine after an unexpected error; if even that fails, say so (the next scan tries again)."""
        self._tries.pop(stem, None)
        parsed = parse_part_stem(stem)
        try:
            self._quarantine(stem, parsed[0] if parsed else stem, manifest_path, tar_for_manifest(manifest_path),
                             reason[:2000], t_inbox, out)
        except Exception as exc:  # noqa: BLE001
            log.error("%r: could not be quarantined (%s); %s", stem, exc, reason, extra={"part": _printable(stem)})

    def _orphan_tarballs(self, tars: dict[str, Path], present: set[str], now: float, out: ScanResult) -> None:
        """A tarball whose manifest has not come after ``arrival_grace`` is quarantined with that reason."""
        for stem in [s for s in self._orphans if s not in tars or s in present]:
            del self._orphans[stem]
        for stem, tar in sorted(tars.items()):
            if stem in present:
                continue
            first = self._orphans.setdefault(stem, now)
            if now - first < self.arrival_grace or not os.path.lexists(tar) or os.path.lexists(manifest_for_tar(tar)):
                continue  # its manifest came meanwhile: the next scan takes the part
            del self._orphans[stem]
            parsed = parse_part_stem(stem)
            reason = (f"tarball without a manifest: no {stem}{_MANIFEST} arrived in {self.arrival_grace:g} s"
                      if parsed else "not a part name (<expid>.p<k>of<K>), and no manifest")
            try:
                self._quarantine(stem, parsed[0] if parsed else stem, manifest_for_tar(tar), tar, reason, now, out)
            except Exception as exc:  # noqa: BLE001
                log.error("%r: tarball without a manifest could not be quarantined: %s", stem, exc,
                          extra={"part": _printable(stem)})

    def _hash_ahead(self, manifest_paths: list[Path]) -> None:
        """Start verifying, in the pool, every new part whose tarball has exactly its manifest's size."""
        if self._pool is None:
            return
        for manifest_path in manifest_paths:
            tar = tar_for_manifest(manifest_path)
            key = (_identity(manifest_path), _identity(tar))
            h = self._hashing.get(manifest_path)
            if h is not None:
                if h.key == key:
                    continue
                del self._hashing[manifest_path]  # the files changed under it: its answer is for other bytes
            stem = manifest_path.name[: -len(_MANIFEST)]
            try:
                known = self.db.part(stem)
                if known is not None and known.state != PartState.QUARANTINED:
                    continue  # a duplicate: compared by sha256 from the manifest, not hashed
                if not _regular(manifest_path) or not _regular(tar):
                    continue  # _one reports it
                manifest = read_manifest(manifest_path)
                complete = os.lstat(tar).st_size == manifest.tar_bytes
            except Exception:  # noqa: BLE001 - _one reports it
                continue
            if complete:
                self._hashing[manifest_path] = _Hash(self._pool.submit(verify_part, tar, manifest_path, members=False),
                                                     key, self._scans)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    # ---------------------------------------------------------------- one part
    def _one(self, stem: str, manifest_path: Path, t_inbox: float, now: float, out: ScanResult,
             hashing: _Hash | None = None) -> None:
        tar = tar_for_manifest(manifest_path)
        if parse_part_stem(stem) is None:
            return self._quarantine(stem, stem, manifest_path, tar, "not a part name (<expid>.p<k>of<K>)", t_inbox, out)
        manifest_kind = _regular(manifest_path)
        if manifest_kind is None:
            return None  # moved away by someone else meanwhile
        if manifest_kind is False:
            return self._quarantine(stem, stem, manifest_path, tar, "field manifest: not a regular file "
                                    "(a symlink, folder, FIFO or device)", t_inbox, out)
        try:
            manifest = read_manifest(manifest_path)  # the schema; the file's name must be the one it describes
            check_manifest_headers(manifest, manifest_path)
        except DwfError as exc:
            return self._quarantine(stem, stem, manifest_path, tar, exc.problem, t_inbox, out)
        tar_kind = _regular(tar)
        if tar_kind is False:
            return self._quarantine(stem, manifest.expid, manifest_path, tar, "field tar_name: the tarball is not a "
                                    "regular file (a symlink, folder, FIFO or device)", t_inbox, out,
                                    sha=manifest.tar_sha256)
        size = os.lstat(tar).st_size if tar_kind else None
        if size is not None and size > manifest.tar_bytes:  # never hashed: it can only be wrong
            self._first_seen.pop(stem, None)
            return self._quarantine(stem, manifest.expid, manifest_path, tar, f"tarball has {size} bytes, the "
                                    f"manifest says {manifest.tar_bytes}", t_inbox, out, sha=manifest.tar_sha256)
        if size is None or size < manifest.tar_bytes:
            first = self._first_seen.setdefault(stem, now)
            if now - first < self.arrival_grace:
                out.waiting.append(stem)
                return None
            what = "tarball is missing" if size is None else f"tarball stays at {size} of {manifest.tar_bytes} bytes"
            return self._quarantine(stem, manifest.expid, manifest_path, tar, f"{what} after {self.arrival_grace:g} s",
                                    t_inbox, out, sha=manifest.tar_sha256)
        self._first_seen.pop(stem, None)
        known = self.db.part(stem)
        if known is not None and known.state != PartState.QUARANTINED:
            return self._duplicate(known, stem, manifest, manifest_path, tar, t_inbox, out)
        key = (_identity(manifest_path), _identity(tar))
        if self._pool is not None and (hashing is None or hashing.key != key):  # new, or changed since: hash anew
            self._hashing[manifest_path] = _Hash(self._pool.submit(verify_part, tar, manifest_path, members=False), key,
                                                 self._scans)
            out.waiting.append(stem)
            return None
        try:
            if hashing is not None:
                verified = hashing.future.result()
            else:
                verified = verify_part(tar, manifest_path, members=False)  # members are verified again on the node
            if verified.tar_sha256 != manifest.tar_sha256:
                raise IntegrityError("the manifest changed while its tarball was verified", manifest_path)
        except DwfError as exc:
            return self._quarantine(stem, manifest.expid, manifest_path, tar, exc.problem, t_inbox, out,
                                    sha=manifest.tar_sha256)
        try:
            dest_tar, dest_manifest = self._store_paths(manifest.night, tar, manifest_path)
        except DwfError as exc:  # the schema let through a value that would leave the store: never
            return self._quarantine(stem, manifest.expid, manifest_path, tar, exc.problem, t_inbox, out,
                                    sha=manifest.tar_sha256)
        if known is not None:
            self.db.forget_quarantined(stem)
        self.db.add_part(manifest, stem=stem, tar=str(dest_tar), manifest_path=str(dest_manifest), t_inbox=t_inbox,
                         mem_gb=self.mem_gb, time_minutes=self.time_minutes, now=now)
        _move(tar, dest_tar)
        _move(manifest_path, dest_manifest)
        log.info("%s: verified (%s, %d CCDs), queued", stem, manifest.kind, len(manifest.ccds), extra={"part": stem})
        out.accepted.append(stem)
        return None

    def _store_paths(self, night: str, tar: Path, manifest_path: Path) -> tuple[Path, Path]:
        return store_paths(self.store, night, tar.name, manifest_path.name)

    def _duplicate(self, known, stem, manifest, manifest_path: Path, tar: Path, t_inbox, out: ScanResult) -> None:
        if known.sha256 != manifest.tar_sha256:
            return self._quarantine(stem, manifest.expid, manifest_path, tar,
                                    "a different part with this name was ingested before (sha256 differs)",
                                    t_inbox, out, record=False)
        stored_tar, stored_manifest = Path(known.tar), Path(known.manifest)
        if not stored_tar.exists() or not stored_manifest.exists():  # an earlier ingest stopped mid-move
            _move(tar, stored_tar)
            _move(manifest_path, stored_manifest)
            log.info("%s: completed the move into the parts store", stem)
            return None
        tar.unlink(missing_ok=True)
        manifest_path.unlink(missing_ok=True)
        log.info("%s: delivered again (same sha256), not queued twice", stem, extra={"part": stem})
        out.duplicates.append(stem)
        return None

    def _quarantine_folder(self, stem: str) -> Path:
        """A new, empty ``<quarantine>/<stem>.<time>[.<n>]`` folder: never one a bad copy before it has."""
        self.quarantine.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for n in range(10_000):
            folder = quarantine_dir(self.quarantine, stem, stamp, n)
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
        raise FileExistsError(f"no free quarantine folder for {stem!r} at {stamp}")

    def _quarantine(self, stem: str, expid: str, manifest_path: Path, tar: Path, reason: str, t_inbox: float,
                    out: ScanResult, *, sha: str | None = None, record: bool = True) -> None:
        self._first_seen.pop(stem, None)
        stem, expid = _printable(stem), _printable(expid)  # a file name of any bytes still fits the DB and the log
        reason = _printable(reason)
        if record:  # a bad copy of a part already accepted must not overwrite its record (paths, state)
            known = self.db.part(stem)
            record = known is None or known.state == PartState.QUARANTINED
        folder = self._quarantine_folder(stem)
        (folder / "reason.txt").write_text(reason + "\n")
        for f in (tar, manifest_path):
            if os.path.lexists(f):  # a dangling or looping symlink too: the link itself moves
                _move(f, folder / f.name)
        if record:
            self.db.quarantine_part(stem, expid, reason, t_inbox, sha)
        log.error("%s: quarantined: %s (in %s)", stem, reason, folder, extra={"part": stem})
        out.quarantined.append((stem, reason))
        return None
