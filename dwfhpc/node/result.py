"""What a node task reports: :class:`TaskResult`, a versioned dataclass written as JSON.

The node leaves it beside the spec as ``<spec stem>.result-<i>.json`` (:func:`dwfhpc.node.result_path`),
the collector reads it back with :meth:`TaskResult.from_json`, the state DB keeps its JSON in
``tasks.result``, and the report / seeing / inventory read ``qa``, ``wcs`` and ``timings`` from it.

A failure says *what kind* of failure it was (:class:`ErrorKind`), set on the node where it knows
(the member does not match the manifest, MemoryError, SIGUSR2 before the time limit, SIGTERM, a
calibration step that failed), so the collector decides retries by kind, never by the message.

Schema versions: ``1`` (this one: ``version`` and ``error_kind`` keys; the optional ``masters`` key, added
later within version 1, says which master bias and flat a science CCD was calibrated with: absent or
null when none were looked up; the ``resource`` error kind was also added within version 1). A result without
``version`` is read as version ``0`` (written before the schema was versioned, or made by
submitit from a non-result value); its error kind is derived from the message once, here.
Any other version, a missing ``status``, an unknown key or a wrong type raises :class:`ResultError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar

from ..errors import DwfError

VERSION = 1
READABLE_VERSIONS = (0, 1)


class ResultError(DwfError):
    """A result that is not a valid :class:`TaskResult` (unknown version, missing key, wrong type)."""


class TaskStatus(StrEnum):
    OK = "ok"
    ERROR = "failed"  # the string results have always carried (and readers compare with)


class ErrorKind(StrEnum):
    """Why a task failed: what the collector's retry policy looks at."""

    INTEGRITY = "integrity"  # the staged member does not match the manifest: the same bytes fail again
    OUT_OF_MEMORY = "out_of_memory"  # MemoryError or the scheduler's OOM kill: retry with more memory
    TIMEOUT = "timeout"  # SIGUSR2 before the time limit, or the scheduler's TIMEOUT: retry with more time
    INTERRUPTED = "interrupted"  # SIGTERM: time limit, preemption or scancel (the node cannot tell which)
    CALIBRATION = "calibration"  # the calibration step failed (masters missing, pipeline error, bad FITS)
    #: the node's own resources: its scratch missing, too small or full, ENOSPC / EIO while staging or writing
    #: in it. Another node may well succeed: retried without using up the CCD's attempts, and counted against
    #: the node (``result.host``), which is excluded after repeated ones (:mod:`dwfhpc.ingest.collector`)
    RESOURCE = "resource"
    OTHER = "other"  # shared file system, spec, anything else

    @classmethod
    def from_scheduler(cls, reason: str | None) -> ErrorKind | None:
        """The kind behind a scheduler's word for a vanished task (``oom``, ``timeout``; others: None)."""
        return {"oom": cls.OUT_OF_MEMORY, "timeout": cls.TIMEOUT}.get(reason or "")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _opt(check):
    return lambda v: v is None or check(v)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: the ``masters`` object's keys: file paths and nights of the masters used (null: none), and whether either
#: is an earlier night's (tonight's were not there yet)
MASTERS_KEYS = ("bias", "flat", "bias_night", "flat_night", "fallback")


def _masters_ok(v: Any) -> bool:
    return (isinstance(v, dict) and set(v) == set(MASTERS_KEYS) and isinstance(v["fallback"], bool)
            and all(v[k] is None or isinstance(v[k], str) for k in MASTERS_KEYS[:4]))


_CHECKS = {  # JSON key -> (check, what it must be)
    "version": (_is_int, "an integer"),
    "status": (lambda v: isinstance(v, str) and v in set(TaskStatus), f"one of {', '.join(TaskStatus)}"),
    "error": (_opt(_is_str), "a string or null"),
    "error_kind": (_opt(lambda v: isinstance(v, str) and v in set(ErrorKind)), f"null or one of {', '.join(ErrorKind)}"),
    "index": (_opt(_is_int), "an integer or null"),
    "spec": (_opt(_is_str), "a string or null"),
    "expid": (_opt(_is_str), "a string or null"),
    "ccd": (_opt(_is_int), "an integer or null"),
    "night": (_opt(_is_str), "a string or null"),
    "kind": (_opt(_is_str), "a string or null"),
    "filter": (_opt(_is_str), "a string or null"),
    "backend": (_opt(_is_str), "a string or null"),
    "container": (_opt(lambda v: isinstance(v, bool)), "true, false or null"),
    "attempt": (_opt(_is_int), "an integer or null"),
    "timings": (lambda v: isinstance(v, dict) and all(_number(x) for x in v.values()), "an object of numbers"),
    "products": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()), "an object of paths"),
    "bytes_written": (_is_int, "an integer"),
    "member_bytes": (_opt(_is_int), "an integer or null"),
    "qa": (lambda v: isinstance(v, dict), "an object"),
    "wcs": (lambda v: isinstance(v, dict), "an object"),
    "host": (_opt(_is_str), "a string or null"),
    "scratch": (_opt(_is_str), "a string or null"),
    "interrupted": (_opt(_is_str), "a string or null"),
    "warnings": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "started": (_opt(_number), "a number or null"),
    "finished": (_opt(_number), "a number or null"),
    "worker": (_opt(lambda v: isinstance(v, dict)), "an object or null"),
    "masters": (_opt(_masters_ok), "null or an object of bias, flat, bias_night, flat_night "
                                   "(strings or null) and fallback (true or false)"),
}


@dataclass
class _Summary:
    """A JSON object of a result with known, typed keys (the dataclass fields) and any others in ``extra``.

    The JSON stays flat (``{"fwhm_arcsec": 1.1, "field": "..."}``): :meth:`to_dict` writes the known keys that
    are set or came in the JSON (null too) and puts the ``extra`` keys beside them; :meth:`from_dict` reads it
    back, checking the known keys' types, so a result's JSON goes back out key for key.
    """

    extra: dict[str, Any] = field(default_factory=dict)  # keys a backend adds (expid, ccd, field, bias, ...)
    #: the known keys the JSON had, null ones too (written back as they came)
    given: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    #: known key -> (check of a non-null value, what it must be)
    CHECKS: ClassVar[dict[str, tuple[Any, str]]] = {}
    WHAT: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | _Summary | None):
        if isinstance(data, cls):
            return data
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ResultError(f"task result key {cls.WHAT!r} must be an object, not {data!r}")
        known: dict[str, Any] = {}
        for key, value in data.items():
            if key in cls.CHECKS:
                check, what = cls.CHECKS[key]
                if value is not None and not check(value):
                    raise ResultError(f"task result key {cls.WHAT}.{key} must be {what} or null, not {value!r}")
                known[key] = value
        return cls(**known, extra={k: v for k, v in data.items() if k not in cls.CHECKS}, given=frozenset(known))

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.CHECKS
               if getattr(self, name) is not None or name in self.given}
        return {**out, **self.extra}


_NUMBER = (_number, "a number")
_INT = (_is_int, "an integer")


@dataclass
class QaSummary(_Summary):
    """What the node measured on the calibrated CCD (:func:`dwfhpc.calibrate.qa.measure_qa`); the product's
    ``.qa.json`` holds the same and more."""

    sky: float | None = None  # median sky, ADU or electrons
    sky_noise: float | None = None
    fwhm_arcsec: float | None = None  # median stellar FWHM
    ellipticity: float | None = None
    n_sources: int | None = None
    n_stars: int | None = None
    saturated_fraction: float | None = None
    bad_fraction: float | None = None
    pixel_scale: float | None = None  # arcsec per pixel
    CHECKS: ClassVar[dict[str, tuple[Any, str]]] = {
        "sky": _NUMBER, "sky_noise": _NUMBER, "fwhm_arcsec": _NUMBER, "ellipticity": _NUMBER, "n_sources": _INT,
        "n_stars": _INT, "saturated_fraction": _NUMBER, "bad_fraction": _NUMBER, "pixel_scale": _NUMBER}
    WHAT: ClassVar[str] = "qa"


class WcsStatus(StrEnum):
    OK = "ok"  # matched the reference catalogue; the shift (dx, dy) was applied
    FAILED = "failed"  # too few matches or too large a residual: the collector may retry with the neighbours' shift
    SKIPPED = "skipped"  # not checked (no reference catalogue, a calibration frame, a backend's own WCS)


@dataclass
class WcsSummary(_Summary):
    """The WCS check of a science CCD (:class:`dwfhpc.calibrate.wcs.WcsResult`); empty when none ran."""

    status: WcsStatus | None = None
    n_match: int | None = None
    dx: float | None = None  # arcsec, east (RA * cos Dec), applied to the header
    dy: float | None = None  # arcsec, north
    rms: float | None = None  # arcsec, after the shift
    reason: str | None = None
    CHECKS: ClassVar[dict[str, tuple[Any, str]]] = {
        "status": (lambda v: isinstance(v, str) and v in set(WcsStatus), f"one of {', '.join(WcsStatus)}"),
        "n_match": _INT,
        "dx": _NUMBER, "dy": _NUMBER, "rms": _NUMBER, "reason": (_is_str, "a string")}
    WHAT: ClassVar[str] = "wcs"

    def __post_init__(self) -> None:
        if self.status is not None:
            self.status = WcsStatus(self.status)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.status is not None:
            out["status"] = str(self.status)
        return out

    @property
    def shift(self) -> tuple[float, float] | None:
        """(dx, dy) in arcsec when the check succeeded, else None."""
        return (self.dx or 0.0, self.dy or 0.0) if self.status == WcsStatus.OK else None


@dataclass
class WorkerRun(_Summary):
    """Warm-worker mode: which worker ran the CCD, when it claimed it, and its preload."""

    name: str | None = None
    job_id: str | None = None
    claimed: float | None = None  # Unix seconds the worker claimed the ticket
    preload_seconds: float | None = None  # copying the CCD's calibrations to the worker's scratch
    task_number: int | None = None  # the how-many-th CCD of this worker
    calibrations: str | None = None  # the worker's calibration cache
    CHECKS: ClassVar[dict[str, tuple[Any, str]]] = {
        "name": (_is_str, "a string"), "job_id": (_is_str, "a string"), "claimed": _NUMBER,
        "preload_seconds": _NUMBER, "task_number": _INT, "calibrations": (_is_str, "a string")}
    WHAT: ClassVar[str] = "worker"


@dataclass(frozen=True)
class MastersUsed:
    """A science CCD's master bias and flat: paths and nights (None: none used), and whether either is an
    earlier night's (tonight's were not there yet). JSON keys: :data:`MASTERS_KEYS`."""

    bias: str | None
    flat: str | None
    bias_night: str | None
    flat_night: str | None
    fallback: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TaskResult:
    """One node task's result (JSON keys are the field names)."""

    status: TaskStatus = TaskStatus.ERROR
    error: str | None = None
    error_kind: ErrorKind | None = None  # set when status is ERROR
    index: int | None = None  # array index
    spec: str | None = None  # the spec's path
    expid: str | None = None
    ccd: int | None = None
    night: str | None = None
    kind: str | None = None  # the frame's kind: science, bias, flat
    filter: str | None = None
    backend: str | None = None
    container: bool | None = None
    attempt: int | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds by stage (STAGES) and total
    products: dict[str, str] = field(default_factory=dict)  # product -> path on the shared FS
    bytes_written: int = 0
    member_bytes: int | None = None
    qa: QaSummary = field(default_factory=QaSummary)  # fwhm_arcsec, ellipticity, sky, n_sources, ...
    wcs: WcsSummary = field(default_factory=WcsSummary)  # status ok|failed|skipped, dx, dy, reason, ...
    host: str | None = None  # the node that ran it (socket.gethostname(); :func:`node_name` for the scheduler's)
    scratch: str | None = None
    interrupted: str | None = None  # the signal's name when one arrived
    warnings: list[str] = field(default_factory=list)
    started: float | None = None  # Unix seconds
    finished: float | None = None
    worker: WorkerRun | None = None  # warm-worker mode: name, job_id, claimed, preload_seconds, task_number
    masters: MastersUsed | None = None  # science: the masters used, e.g. an earlier night's as fallback
    version: int = VERSION

    def __post_init__(self) -> None:
        self.qa = QaSummary.from_dict(self.qa)  # an object given as a mapping (the JSON's form) is typed here
        self.wcs = WcsSummary.from_dict(self.wcs)
        if isinstance(self.worker, Mapping):
            self.worker = WorkerRun.from_dict(self.worker)
        if isinstance(self.masters, Mapping):
            self.masters = MastersUsed(**self.masters)

    @property
    def ok(self) -> bool:
        return self.status == TaskStatus.OK

    @property
    def node(self) -> str | None:
        """The scheduler's name of the node that ran the task (:func:`node_name` of ``host``)."""
        return node_name(self.host)

    def fail(self, error: str, kind: ErrorKind) -> None:
        """Mark this result failed with ``error`` of ``kind``."""
        self.status, self.error, self.error_kind = TaskStatus.ERROR, error, kind

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["qa"], d["wcs"] = self.qa.to_dict(), self.wcs.to_dict()
        d["worker"] = self.worker.to_dict() if self.worker is not None else None
        d["masters"] = self.masters.to_dict() if self.masters is not None else None
        d["status"] = str(self.status)
        d["error_kind"] = str(self.error_kind) if self.error_kind is not None else None
        return d

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskResult:
        """Validate ``data`` (a result's JSON object) into a TaskResult; :class:`ResultError` says what is wrong."""
        if not isinstance(data, Mapping):
            raise ResultError(f"a task result must be a JSON object, not {type(data).__name__}")
        version = data.get("version", 0)
        if not _is_int(version) or version not in READABLE_VERSIONS:
            raise ResultError(f"task result schema version {version!r} is unknown "
                              f"(this dwfhpc reads {', '.join(map(str, READABLE_VERSIONS))})")
        if "status" not in data:
            raise ResultError("task result has no 'status'")
        unknown = sorted(set(data) - set(_CHECKS))
        if unknown and version >= 1:
            raise ResultError(f"task result has unknown key(s): {', '.join(unknown)}")
        for key, value in data.items():
            if key in _CHECKS and not _CHECKS[key][0](value):
                raise ResultError(f"task result key {key!r} must be {_CHECKS[key][1]}, not {value!r}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["status"] = TaskStatus(values["status"])
        values["version"] = VERSION
        kind = values.get("error_kind")
        if kind is not None:
            values["error_kind"] = ErrorKind(kind)
        elif values["status"] == TaskStatus.ERROR:
            values["error_kind"] = _legacy_kind(values.get("error") or "") if version == 0 else ErrorKind.OTHER
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes) -> TaskResult:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ResultError(f"task result is not JSON ({exc})") from None
        return cls.from_dict(data)


def node_name(host: str | None) -> str | None:
    """The scheduler's name of the node a result's ``host`` names: the short host name (``dwfn2.cluster`` ->
    ``dwfn2``; an IP address is kept whole); None when there is no host."""
    if not host:
        return None
    if host.replace(".", "").isdigit():
        return host
    return host.split(".", 1)[0] or None


def _legacy_kind(error: str) -> ErrorKind:
    """The kind of a version-0 failure, from the messages the node wrote before it said the kind."""
    if "does not match the manifest" in error:
        return ErrorKind.INTEGRITY
    if "MemoryError" in error:
        return ErrorKind.OUT_OF_MEMORY
    if error.startswith("interrupted by SIGUSR2"):
        return ErrorKind.TIMEOUT
    if error.startswith("interrupted by"):
        return ErrorKind.INTERRUPTED
    return ErrorKind.OTHER


__all__ = ["VERSION", "READABLE_VERSIONS", "MASTERS_KEYS", "ErrorKind", "QaSummary", "ResultError", "TaskResult",
           "TaskStatus", "MastersUsed", "WcsStatus", "WcsSummary", "WorkerRun", "node_name"]
