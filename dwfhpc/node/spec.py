"""A task spec: everything one array task needs, as a small JSON file on the shared file system.

The same spec drives ``dwfhpc node run SPEC --index I`` whether submitit, a PBS template or a
manual ``sbatch --array`` started it; task ``I`` works on CCD ``ccds[I]``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import DwfError

SCHEMA = "dwfhpc.task/1"


@dataclass
class TaskSpec:
    expid: str
    instrument: str
    night: str
    kind: str  # science | bias | flat
    filter: str
    part_tar: str
    manifest: str
    ccds: list[int]
    products: str
    library: str
    masters: str
    results: str  # folder for <spec stem>.result-<index>.json
    backend: str = "embedded"
    container: bool = False
    image: str | None = None
    binds: list[str] = field(default_factory=list)
    refcat: str | None = None
    bpm_dir: str | None = None
    scratch_vars: list[str] = field(default_factory=lambda: ["JOBFS", "SLURM_TMPDIR", "TMPDIR"])
    scratch_fallback: str = "/tmp"
    min_free_gb: float = 0.5
    to_electrons: bool = False
    require_masters: bool = True
    qlevel: float = 4.0
    prior_shifts: dict[str, list[float]] = field(default_factory=dict)  # ccd -> [dx, dy] arcsec
    attempt: int = 1
    schema: str = SCHEMA

    @classmethod
    def from_site(cls, site, manifest_path: str | os.PathLike[str], part_tar: str | os.PathLike[str], manifest=None,
                  **overrides) -> "TaskSpec":
        """A spec for every CCD of a part, paths and options from the site config."""
        from ..parts import read_manifest

        m = manifest or read_manifest(manifest_path)
        cal, node, ingest = site.calibration, site.node, site.ingest
        spec = cls(
            expid=m.expid, instrument=m.instrument, night=m.night, kind=m.kind, filter=m.filter,
            part_tar=str(Path(part_tar).resolve()), manifest=str(Path(manifest_path).resolve()), ccds=m.ccds,
            products=str(site.path(cal.products)), library=str(site.path(cal.library)),
            masters=str(site.path(cal.masters)), results=str(site.path(ingest.specs)),
            backend=node.backend, container=node.container, image=str(site.path(node.image)) if node.image else None,
            binds=list(node.binds), refcat=str(site.path(cal.refcat)) if cal.refcat else None,
            bpm_dir=str(site.path(cal.bpm_dir)) if cal.bpm_dir else None, scratch_vars=list(node.scratch_vars),
            scratch_fallback=node.scratch_fallback, min_free_gb=node.min_free_gb, to_electrons=cal.to_electrons,
            qlevel=cal.rice_qlevel,
        )
        for k, v in overrides.items():
            setattr(spec, k, v)
        return spec

    def write(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_text(path, json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> "TaskSpec":
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise DwfError("task spec is missing", p) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise DwfError(f"task spec is not valid JSON ({exc})", p) from None
        if data.get("schema") != SCHEMA:
            raise DwfError(f"not a dwfhpc task spec (schema {data.get('schema')!r})", p)
        try:
            return cls(**data)
        except TypeError as exc:
            raise DwfError(f"task spec has missing or unknown fields ({exc})", p) from None

    def ccd_for(self, index: int, path=None) -> int:
        if not 0 <= index < len(self.ccds):
            raise DwfError(f"task index {index} out of range: the spec has {len(self.ccds)} CCDs", path)
        return self.ccds[index]


def result_path(spec_path: str | os.PathLike[str], index: int) -> Path:
    p = Path(spec_path)
    return p.with_name(f"{p.stem}.result-{index}.json")
