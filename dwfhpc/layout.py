"""Names and places of every file the toolkit writes, in one spot.

Parts:     ``<expid>.p<k>of<K>.tar`` and ``<expid>.p<k>of<K>.manifest.json`` (k is 1-based)
Members:   ``<expid>_<ccd:02d><codec suffix>`` inside a part tarball
CCD FITS:  ``<expid>_<ccd:02d>.fits`` (a complete single-CCD raw file)
Products:  ``<products>/<night>/<expid>/<expid>_<ccd:02d>.{cal.fits.fz,mask.fits.fz,cat.fits,qa.json}``
Library:   ``<library>/<night>/<ccd:02d>/bias/<expid>_<ccd:02d>.fits``
           ``<library>/<night>/<ccd:02d>/flat/<filter>/<expid>_<ccd:02d>.fits``
Masters:   ``<masters>/<night>/bias_<ccd:02d>.fits``, ``<masters>/<night>/flat_<filter>_<ccd:02d>.fits``
Store:     ``<parts store>/<night>/<part tar and manifest>``
Quarantine: ``<quarantine>/<stem>.<YYYYmmddTHHMMSS>[.<n>]/``
Scratch:   ``<scratch root>/dwfhpc-<expid>_<ccd:02d>-<random>/``
Jobs:      :class:`JobFiles`: ``<specs>/<part>.a<attempt>.c<first CCD:02d>.json``, its results
           ``<spec stem>.result-<index>.json`` beside it, ``<jobs>/fullred/``, and the warm workers' queue
           ``<jobs>/workers/`` (:class:`WorkerQueueFiles`)

Every path built from a value that came from a manifest, a spec or a header goes through
:func:`under`: each value must be one plain name (no ``/``, no ``..``, no control character) and
the joined path, resolved, must stay below its root. The value patterns of
:mod:`dwfhpc.parts.schema` are the first line of defence; this is the last, so a field whose
pattern is wrong one day still cannot put a file outside its folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import IntegrityError

if TYPE_CHECKING:
    from .config import SiteSettings

PRODUCT_KINDS = ("cal", "mask", "cat", "qa")
_PRODUCT_SUFFIX = {"cal": ".cal.fits.fz", "mask": ".mask.fits.fz", "cat": ".cat.fits", "qa": ".qa.json"}
PART_RE = re.compile(r"^(?P<expid>[A-Za-z0-9_\-]+)\.p(?P<k>[0-9]+)of(?P<n>[0-9]+)\Z")  # \Z: no trailing newline


class UnsafePathError(IntegrityError):
    """A value that would make a path leave its root (or is not one plain file-name component)."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_component(value: object, field: str) -> str:
    """``value`` as one plain path component, or :class:`UnsafePathError` naming ``field``."""
    if not isinstance(value, str) or not value:
        raise UnsafePathError(f"field {field}: {value!r} is not a non-empty name")
    too_long = len(value.encode("utf-8", "surrogatepass")) > 255
    if value in (".", "..") or "/" in value or "\\" in value or _CONTROL.search(value) or too_long:
        raise UnsafePathError(f"field {field}: {value!r} is not a plain file name (a '/', '..', a control "
                              "character or too long)")
    return value


def under(root: str | os.PathLike[str], *components: tuple[str, object]) -> Path:
    """``root / c1 / c2 ...`` for ``(field, value)`` pairs, checked to stay below ``root`` once resolved.

    Each value must be one plain name (:func:`check_component`); the joined path is then resolved
    (following any symlinks already on disk) and must still be inside the resolved root.
    """
    root = Path(root)
    path = root
    for field, value in components:
        path = path / check_component(value, field)
    if components:
        real_root = root.resolve()
        real = path.resolve()
        if real == real_root or real_root not in real.parents:
            names = ", ".join(f for f, _ in components)
            raise UnsafePathError(f"field(s) {names}: {path} resolves to {real}, outside {real_root}")
    return path


def part_stem(expid: str, k: int, n: int) -> str:
    return f"{expid}.p{k}of{n}"


def part_tar_name(expid: str, k: int, n: int) -> str:
    return f"{part_stem(expid, k, n)}.tar"


def manifest_name(expid: str, k: int, n: int) -> str:
    return f"{part_stem(expid, k, n)}.manifest.json"


def manifest_for_tar(tar: Path) -> Path:
    """``X.p1of4.tar`` -> ``X.p1of4.manifest.json`` beside it."""
    return tar.with_name(tar.name[: -len(".tar")] + ".manifest.json")


def tar_for_manifest(manifest: Path) -> Path:
    return manifest.with_name(manifest.name[: -len(".manifest.json")] + ".tar")


def parse_part_stem(stem: str) -> tuple[str, int, int] | None:
    """``DECam_00200666.p2of4`` -> (``DECam_00200666``, 2, 4), or None."""
    m = PART_RE.match(stem)
    return (m["expid"], int(m["k"]), int(m["n"])) if m else None


def ccd_stem(expid: str, ccd: int) -> str:
    return f"{expid}_{ccd:02d}"


def ccd_fits_name(expid: str, ccd: int) -> str:
    return f"{ccd_stem(expid, ccd)}.fits"


def product_dir(products: Path, night: str, expid: str) -> Path:
    return under(products, ("night", night), ("expid", expid))


def product_paths(products: Path, night: str, expid: str, ccd: int) -> dict[str, Path]:
    stem = ccd_stem(expid, ccd)
    return {k: under(products, ("night", night), ("expid", expid), ("ccd", f"{stem}{_PRODUCT_SUFFIX[k]}"))
            for k in PRODUCT_KINDS}


def store_paths(store: Path, night: str, tar_name: str, manifest_name_: str) -> tuple[Path, Path]:
    """Where the inbox moves a verified part: ``<store>/<night>/<tar>`` and its manifest beside it."""
    return (under(store, ("night", night), ("tar_name", tar_name)),
            under(store, ("night", night), ("manifest name", manifest_name_)))


def quarantine_dir(quarantine: Path, stem: str, stamp: str, n: int = 0) -> Path:
    """``<quarantine>/<stem>.<stamp>`` (``.<n>`` added for n > 0): the inbox file's own name plus a time stamp.

    The stem is whatever name arrived in the inbox: control characters and backslashes become ``_``
    and it is cut to 200 characters, so any file name there can be quarantined. Two bad copies of one
    part within the same second take ``n`` = 0, 1, ... (the caller creates the folder, refusing one
    that exists, and tries the next ``n``), so neither replaces the other's files or ``reason.txt``.
    """
    safe = _CONTROL.sub("_", stem).replace("\\", "_").replace("/", "_")
    safe = safe.encode("utf-8", "surrogateescape")[:200].decode("utf-8", "replace").replace("\ufffd", "_")
    return under(quarantine, ("part name", f"{safe}.{stamp}" + (f".{n}" if n else "")))


def scratch_label(expid: str, ccd: int) -> str:
    """The label in a node task's scratch folder name (``dwfhpc-<label>-XXXX``), one plain name."""
    return check_component(ccd_stem(expid, ccd), "expid")


def product_names(expid: str, ccd: int) -> dict[str, str]:
    stem = ccd_stem(expid, ccd)
    return {k: f"{stem}{_PRODUCT_SUFFIX[k]}" for k in PRODUCT_KINDS}


def library_path(library: Path, night: str, ccd: int, kind: str, filter_: str, expid: str) -> Path:
    """Where a raw calibration CCD is filed: bias by night/CCD, flats also by filter."""
    parts = [("night", night), ("ccd", f"{ccd:02d}"), ("kind", kind)]
    if kind == "flat":
        parts.append(("filter", filter_ or "none"))
    return under(library, *parts, ("expid", ccd_fits_name(expid, ccd)))


def master_path(masters: Path, night: str, kind: str, ccd: int, filter_: str | None = None) -> Path:
    if kind == "bias":
        return under(masters, ("night", night), ("ccd", f"bias_{ccd:02d}.fits"))
    return under(masters, ("night", night), ("filter", f"flat_{filter_ or 'none'}_{ccd:02d}.fits"))


@dataclass(frozen=True)
class WorkerQueueFiles:
    """The files of the warm workers' shared-FS queue under ``root`` (see :mod:`dwfhpc.workers.queue`)."""

    root: Path

    SUBDIRS = ("tickets", "claimed", "finished", "workers", "stop")

    @property
    def tickets(self) -> Path:
        """``tickets/``: handed out, not yet claimed."""
        return self.root / "tickets"

    @property
    def claimed(self) -> Path:
        """``claimed/``: one folder per worker."""
        return self.root / "claimed"

    @property
    def finished(self) -> Path:
        """``finished/``: claims whose result file is written."""
        return self.root / "finished"

    @property
    def heartbeats(self) -> Path:
        """``workers/``: one heartbeat file per worker."""
        return self.root / "workers"

    @property
    def stop(self) -> Path:
        """``stop/``: drain requests."""
        return self.root / "stop"

    @property
    def masters_generation(self) -> Path:
        """``masters.generation``: bumped by ingest each time new masters are built."""
        return self.root / "masters.generation"

    @property
    def pool(self) -> Path:
        """``pool.json``: the ingest's worker pool (task ids, submission times)."""
        return self.root / "pool.json"

    @property
    def settings(self) -> Path:
        """``settings.json``: the workers' settings (scratch, stop margin), written by ingest
        (:class:`dwfhpc.workers.settings.WorkerSettings`)."""
        return self.root / "settings.json"

    def ticket(self, name: str) -> Path:
        return self.tickets / name

    def claimed_by(self, worker: str) -> Path:
        """``claimed/<worker>/``."""
        return self.claimed / worker

    def claim(self, worker: str, name: str) -> Path:
        """``claimed/<worker>/<ticket name>``."""
        return self.claimed_by(worker) / name

    def finished_ticket(self, name: str) -> Path:
        return self.finished / name

    def heartbeat(self, worker: str) -> Path:
        """``workers/<worker>.json``."""
        return self.heartbeats / f"{worker}.json"

    def stop_request(self, worker: str) -> Path:
        """``stop/<worker>`` (``stop/ALL`` for every worker)."""
        return self.stop / worker


@dataclass(frozen=True)
class JobFiles:
    """The files that ingest and its jobs exchange: task specs and results under ``specs``, job folders
    (submitit, scheduler scripts and logs, the workers' queue) under ``jobs``."""

    specs: Path
    jobs: Path

    @classmethod
    def for_site(cls, site: SiteSettings) -> JobFiles:
        """The site's ``ingest.specs`` and ``ingest.jobs_dir``."""
        return cls(specs=site.path(site.ingest.specs), jobs=site.path(site.ingest.jobs_dir))

    @staticmethod
    def spec_name(part: str, attempt: int, first_ccd: int) -> str:
        """``<part>.a<attempt>.c<first CCD:02d>.json``."""
        return f"{part}.a{attempt}.c{first_ccd:02d}.json"

    def spec(self, part: str, attempt: int, first_ccd: int) -> Path:
        """The spec of one chunk of a part's attempt: ``<specs>/<part>.a<attempt>.c<first CCD:02d>.json``."""
        return Path(self.specs) / self.spec_name(part, attempt, first_ccd)

    @staticmethod
    def result(spec_path: str | os.PathLike[str], index: int) -> Path:
        """``<spec dir>/<spec stem>.result-<index>.json``: where task ``index`` of a spec leaves its result."""
        p = Path(spec_path)
        return p.with_name(f"{p.stem}.result-{index}.json")

    @property
    def worker_queue(self) -> Path:
        """The warm workers' queue root, ``<jobs>/workers``."""
        return Path(self.jobs) / "workers"

    @property
    def worker_files(self) -> WorkerQueueFiles:
        return WorkerQueueFiles(self.worker_queue)

    @property
    def fullred(self) -> Path:
        """``<jobs>/fullred``: full-reduction scripts and their logs."""
        return Path(self.jobs) / "fullred"
