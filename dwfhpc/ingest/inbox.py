"""The inbox: complete, verified parts move into the parts store and are queued; bad ones are quarantined.

A part is acted on only when its manifest is in the inbox and its tarball matches the manifest
(size, sha256, member list). A tarball still short of its size waits up to ``arrival_grace``
seconds; past that, or on any integrity problem, the part goes to ``quarantine/<stem>.<time>/``
with ``reason.txt`` and the reason is recorded in the state DB and logged. A part seen before
(same name, same sha256) is a duplicate delivery: it is not queued again. The DB record is written
before the files move, so a crash in between is completed on the next scan, never lost.

The tarballs complete in one scan are hashed at once in ``verify_threads`` threads (hashlib releases
the GIL), while parts are still accepted one by one, oldest first, each as soon as its own hash is done.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DwfError
from ..layout import parse_part_stem, tar_for_manifest
from ..parts import read_manifest, verify_part
from ..state import StateDB
from ..states import PartState

log = logging.getLogger(__name__)
_MANIFEST = ".manifest.json"


@dataclass
class ScanResult:
    accepted: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


def _move(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
    except OSError:
        shutil.move(str(src), str(dest))  # another file system


class Inbox:
    def __init__(self, inbox: Path, store: Path, quarantine: Path, db: StateDB, *, mem_gb: float, time_minutes: int,
                 arrival_grace: float = 120.0, verify_threads: int = 4):
        self.inbox, self.store, self.quarantine = Path(inbox), Path(store), Path(quarantine)
        self.db = db
        self.mem_gb, self.time_minutes = mem_gb, time_minutes
        self.arrival_grace = arrival_grace
        self._first_seen: dict[str, float] = {}
        self._pool = ThreadPoolExecutor(verify_threads, thread_name_prefix="verify") if verify_threads > 1 else None

    def scan(self, now: float | None = None, on_accepted=None) -> ScanResult:
        """Look at every manifest in the inbox once, oldest first; ``on_accepted(stem)`` after each queued part."""
        now = now or time.time()
        out = ScanResult()
        if not self.inbox.is_dir():
            return out
        manifests = []
        for p in self.inbox.glob(f"*{_MANIFEST}"):
            try:
                manifests.append((p.stat().st_ctime, p))
            except FileNotFoundError:
                continue
        manifests.sort()
        hashing = self._hash_ahead([p for _, p in manifests])
        for ctime, manifest_path in manifests:
            stem = manifest_path.name[: -len(_MANIFEST)]
            before = len(out.accepted)
            try:
                self._one(stem, manifest_path, min(ctime, now), now, out, hashing.get(manifest_path))
            except FileNotFoundError:
                continue  # moved away by someone else meanwhile
            if on_accepted and len(out.accepted) > before:
                on_accepted(stem)
        return out

    def _hash_ahead(self, manifest_paths: list[Path]) -> dict[Path, Future]:
        """Start verifying, in the pool, every new part whose tarball has its full size."""
        if self._pool is None or len(manifest_paths) < 2:
            return {}
        started = {}
        for manifest_path in manifest_paths:
            stem = manifest_path.name[: -len(_MANIFEST)]
            known = self.db.part(stem)
            if known is not None and known.state != PartState.QUARANTINED:
                continue  # a duplicate: compared by sha256 from the manifest, not hashed
            try:
                manifest = read_manifest(manifest_path)
                complete = tar_for_manifest(manifest_path).stat().st_size == manifest.tar_bytes
            except (DwfError, OSError):
                continue  # _one reports it
            if complete:
                started[manifest_path] = self._pool.submit(verify_part, tar_for_manifest(manifest_path), manifest_path,
                                                           members=False)
        return started

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _one(self, stem: str, manifest_path: Path, t_inbox: float, now: float, out: ScanResult,
             hashing: Future | None = None) -> None:
        tar = tar_for_manifest(manifest_path)
        if parse_part_stem(stem) is None:
            return self._quarantine(stem, stem, manifest_path, tar, "not a part name (<expid>.p<k>of<K>)", t_inbox, out)
        try:
            manifest = read_manifest(manifest_path)
        except DwfError as exc:
            return self._quarantine(stem, stem, manifest_path, tar, exc.problem, t_inbox, out)
        size = tar.stat().st_size if tar.exists() else None
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
        try:
            if hashing is not None:
                hashing.result()
            else:
                verify_part(tar, manifest_path, members=False)  # members are verified again on the node
        except DwfError as exc:
            return self._quarantine(stem, manifest.expid, manifest_path, tar, exc.problem, t_inbox, out,
                                    sha=manifest.tar_sha256)
        dest_tar, dest_manifest = self._store_paths(manifest.night, tar, manifest_path)
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
        folder = self.store / night
        return folder / tar.name, folder / manifest_path.name

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

    def _quarantine(self, stem: str, expid: str, manifest_path: Path, tar: Path, reason: str, t_inbox: float,
                    out: ScanResult, *, sha: str | None = None, record: bool = True) -> None:
        folder = self.quarantine / f"{stem}.{time.strftime('%Y%m%dT%H%M%S')}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in (tar, manifest_path):
            if f.exists():
                _move(f, folder / f.name)
        (folder / "reason.txt").write_text(reason + "\n")
        if record:
            self.db.quarantine_part(stem, expid, reason, t_inbox, sha)
        log.error("%s: quarantined: %s (in %s)", stem, reason, folder, extra={"part": stem})
        out.quarantined.append((stem, reason))
        return None
