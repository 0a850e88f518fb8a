"""The task spec: a small JSON file on the shared file system describing one part's node tasks.

Task ``i`` of the array calibrates ``ccds[i]``. Every path in a spec is absolute (filled from the
site config by :meth:`TaskSpec.from_site`), so a node needs nothing but the spec.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, fields
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, get_args

from ..atomic import atomic_write_text
from ..config import Backend, CalibrationSettings, NodeSettings
from ..errors import DwfError
from ..layout import JobFiles
from ..parts import Manifest, read_manifest
from ..parts.schema import check_spec_identity, read_json_text

MAX_SPEC_BYTES = 4 * 1024 * 1024
#: types of the fields a spec file may carry (beyond the identity fields checked by the schema)
_TYPES: dict[str, tuple[type, ...]] = {
    "container": (bool,), "image": (str, type(None)), "binds": (list,), "apptainer": (str,),
    "backend_options": (dict,), "refcat": (str, list, type(None)), "bpm_dir": (str, type(None)),
    "scratch_vars": (list,), "scratch_fallback": (str,), "min_free_gb": (int, float), "scratch_factor": (int, float),
    "to_electrons": (bool,), "qlevel": (int, float), "wcs_min_matches": (int,), "require_masters": (bool,),
    "masters_max_age_days": (int,),
    "prior_shifts": (dict,), "attempt": (int,), "expnum": (int,), "field": (str,), "filter": (str,),
    "expid": (str,), "instrument": (str,), "night": (str,), "kind": (str,), "ccds": (list,),
}
_BOUNDS = {"min_free_gb": (0, 1e12), "scratch_factor": (0, 1e6), "qlevel": (0, 1e6), "wcs_min_matches": (0, 1e9),
           "masters_max_age_days": (0, 1e6)}  # sanity, not policy

SCHEMA = "dwfhpc.task/1"
KINDS = ("science", "bias", "flat")  # the instrument kinds a task calibrates or files (dwfhpc.instruments.KINDS)
BACKENDS = get_args(Backend)
INDEX_VARS = ("SLURM_ARRAY_TASK_ID", "PBS_ARRAY_INDEX", "PBS_ARRAYID")
_BACKEND_OPTION_KEYS = ("photpipe_command", "photpipe_root", "photpipe_outputs", "photpipe_env", "hscpipe_repo", "hscpipe_rerun",
                        "hscpipe_config", "hscpipe_ingest", "hscpipe_command", "hscpipe_outputs")
#: spec fields that are ``site.node``'s settings of the same name, as they are
_FROM_NODE = ("backend", "container", "binds", "apptainer", "scratch_vars", "scratch_fallback", "min_free_gb",
              "scratch_factor", "require_masters")
#: spec field -> ``site.calibration`` setting, as it is
_FROM_CALIBRATION = {"to_electrons": "to_electrons", "qlevel": "rice_qlevel", "wcs_min_matches": "wcs_min_matches",
                     "masters_max_age_days": "masters_max_age_days"}


def _settings_values(node: NodeSettings, cal: CalibrationSettings) -> dict[str, Any]:
    """The spec fields copied from the node and calibration settings (paths are resolved by :meth:`TaskSpec.from_site`)."""
    return {**{k: copy.deepcopy(getattr(node, k)) for k in _FROM_NODE},
            **{k: getattr(cal, setting) for k, setting in _FROM_CALIBRATION.items()}}


_DEFAULTS = _settings_values(NodeSettings(), CalibrationSettings())


def _default(key: str):
    """The spec field's default: the config classes' default of the setting it comes from."""
    value = _DEFAULTS[key]
    if isinstance(value, (list, dict)):
        return dataclass_field(default_factory=lambda: copy.deepcopy(value))
    return dataclass_field(default=value)


@dataclass
class TaskSpec:
    """Contract 3. ``prior_shifts`` maps a CCD (as a string: JSON keys) to ``[dx, dy]`` arcsec."""

    expid: str
    instrument: str
    night: str
    kind: str
    filter: str
    part_tar: str
    manifest: str
    ccds: list[int]
    products: str
    library: str
    masters: str
    expnum: int = 0
    field: str = ""
    backend: str = _default("backend")
    container: bool = _default("container")
    image: str | None = None
    binds: list[str] = _default("binds")
    apptainer: str = _default("apptainer")
    backend_options: dict[str, Any] = dataclass_field(default_factory=dict)
    refcat: str | list[str] | None = None
    bpm_dir: str | None = None
    scratch_vars: list[str] = _default("scratch_vars")
    scratch_fallback: str = _default("scratch_fallback")
    min_free_gb: float = _default("min_free_gb")
    scratch_factor: float = _default("scratch_factor")
    to_electrons: bool = _default("to_electrons")
    qlevel: float = _default("qlevel")
    wcs_min_matches: int = _default("wcs_min_matches")
    require_masters: bool = _default("require_masters")
    masters_max_age_days: int = _default("masters_max_age_days")  # an earlier night's masters: at most this old
    prior_shifts: dict[str, list[float]] = dataclass_field(default_factory=dict)
    attempt: int = 1
    schema: str = SCHEMA

    def __post_init__(self) -> None:
        for key, types in _TYPES.items():
            value = getattr(self, key)
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise DwfError(f"field {key}: {value!r:.60} is not a {' or '.join(t.__name__ for t in types)}")
        for key, (lo, hi) in _BOUNDS.items():
            if not lo <= getattr(self, key) <= hi:
                raise DwfError(f"field {key}: {getattr(self, key)!r:.30} is outside {lo:g}..{hi:g}")
        for key in ("binds", "scratch_vars"):
            if not all(isinstance(v, str) for v in getattr(self, key)):
                raise DwfError(f"field {key}: not a list of strings")
        if self.kind not in KINDS:
            raise DwfError(f"task kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.backend not in BACKENDS:
            raise DwfError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if not self.ccds:
            raise DwfError("task spec lists no CCDs")
        check_spec_identity(self)  # expid, instrument, night, filter, field, CCDs, part names: the manifest's patterns
        self.prior_shifts = {str(k): [float(x) for x in v] for k, v in (self.prior_shifts or {}).items()}

    # ------------------------------------------------------------------ build
    @classmethod
    def from_site(cls, site, manifest_path: str | os.PathLike[str], part_tar: str | os.PathLike[str], *,
                  ccds: list[int] | None = None, attempt: int = 1,
                  prior_shifts: dict[int, tuple[float, float]] | None = None, manifest: Manifest | None = None,
                  **overrides: Any) -> TaskSpec:
        """Spec for a verified part: identity from its manifest, paths and options from ``site``.

        ``manifest`` saves re-reading it when the caller has it; ``overrides`` replace any field.
        """
        manifest = manifest or read_manifest(manifest_path)
        node, cal = site.node, site.calibration

        def path(value: str | None) -> str | None:  # absolute, so a node needs nothing but the spec
            return str(site.path(value)) if value else None

        options = {k: getattr(node, k) for k in _BACKEND_OPTION_KEYS}
        for key in ("photpipe_root", "hscpipe_repo", "hscpipe_config"):
            options[key] = path(options[key])
        values: dict[str, Any] = dict(
            expid=manifest.expid, instrument=manifest.instrument, night=manifest.night, kind=manifest.kind,
            filter=manifest.filter, expnum=manifest.expnum, field=manifest.field,
            part_tar=str(Path(part_tar).resolve()), manifest=str(Path(manifest_path).resolve()),
            ccds=list(ccds) if ccds else manifest.ccds,
            products=str(site.path(cal.products)), library=str(site.path(cal.library)),
            masters=str(site.path(cal.masters)),
            refcat=path(cal.refcat), bpm_dir=path(cal.bpm_dir), image=path(node.image),
            backend_options=options, attempt=attempt,
            prior_shifts={str(k): list(v) for k, v in (prior_shifts or {}).items()},
            **_settings_values(node, cal),
        )
        values.update(overrides)
        return cls(**values)

    # ------------------------------------------------------------------ use
    def ccd_for(self, index: int) -> int:
        if not 0 <= index < len(self.ccds):
            raise DwfError(f"task index {index} is out of range (this spec has {len(self.ccds)} CCDs)")
        return self.ccds[index]

    def prior_shift(self, ccd: int) -> tuple[float, float] | None:
        v = self.prior_shifts.get(str(ccd))
        return (v[0], v[1]) if v else None

    def option(self, key: str) -> Any:
        """A backend option from the spec, else the site default of :class:`NodeSettings`."""
        if key in self.backend_options:
            return self.backend_options[key]
        return getattr(NodeSettings(), key)

    # ------------------------------------------------------------------ files
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def write(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_text(path, self.to_json())

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> TaskSpec:
        path = Path(path)
        try:
            data = json.loads(read_json_text(path, MAX_SPEC_BYTES, "task spec"))
        except FileNotFoundError:
            raise DwfError("task spec is missing", path) from None
        except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise DwfError(f"task spec is not valid JSON ({exc})", path) from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            got = data.get("schema") if isinstance(data, dict) else None
            raise DwfError(f"not a dwfhpc task spec (schema {got!r}, expected {SCHEMA!r})", path)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DwfError(f"unknown task spec key(s): {', '.join(unknown)}", path)
        try:
            return cls(**data)
        except TypeError as exc:
            raise DwfError(f"task spec has missing fields ({exc})", path) from None
        except DwfError as exc:
            raise DwfError(exc.problem, path) from None


def result_path(spec_path: str | os.PathLike[str], index: int) -> Path:
    """``<spec dir>/<spec stem>.result-<index>.json``: where the CLI path leaves a task's result
    (:meth:`dwfhpc.layout.JobFiles.result`)."""
    return JobFiles.result(spec_path, index)


def task_index(cli_index: int | None = None, env: dict[str, str] | None = None) -> int:
    """The array index: ``--index`` if given, else $SLURM_ARRAY_TASK_ID / $PBS_ARRAY_INDEX / $PBS_ARRAYID."""
    if cli_index is not None:
        return int(cli_index)
    env = os.environ if env is None else env
    for var in INDEX_VARS:
        value = env.get(var)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                raise DwfError(f"${var}={value!r} is not an integer task index") from None
    raise DwfError(f"no task index: give --index or run inside an array job (${', $'.join(INDEX_VARS)})")
