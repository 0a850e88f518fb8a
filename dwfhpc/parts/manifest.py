"""The part manifest: a schema-versioned JSON description of one part tarball and its members."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from astropy.io import fits

from ..atomic import atomic_write_text
from ..errors import IntegrityError

SCHEMA = "dwfhpc.part/1"


@dataclass
class Member:
    """One CCD inside a part."""

    ccd: int
    name: str  # file name inside the tarball
    codec: str
    bytes: int
    sha256: str
    dtype: str
    shape: list[int]
    header: str  # merged primary + extension header, FITS cards (80-character records)

    def fits_header(self) -> fits.Header:
        return fits.Header.fromstring(self.header)


@dataclass
class Manifest:
    instrument: str
    expid: str
    expnum: int
    night: str
    obstype: str
    kind: str
    filter: str
    field: str
    date_obs: str
    exptime: float
    part: int  # k, 1-based
    parts: int  # K
    codec: str
    codec_params: dict
    tar_name: str
    tar_bytes: int
    tar_sha256: str
    members: list[Member] = field(default_factory=list)
    ccds_in_exposure: list[int] = field(default_factory=list)
    created: str = ""
    schema: str = SCHEMA

    @property
    def ccds(self) -> list[int]:
        return [m.ccd for m in self.members]

    def member(self, ccd: int) -> Member:
        for m in self.members:
            if m.ccd == ccd:
                return m
        raise IntegrityError(f"CCD {ccd} is not in this part (it holds {self.ccds})", self.tar_name)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def write(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_text(path, self.to_json())


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Load and check a manifest; a damaged or foreign file is an :class:`IntegrityError`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise IntegrityError("manifest is missing", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"manifest is not valid JSON ({exc})", path) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise IntegrityError(f"not a dwfhpc part manifest (schema {data.get('schema') if isinstance(data, dict) else None!r}, "
                             f"expected {SCHEMA!r})", path)
    try:
        members = [Member(**m) for m in data.pop("members")]
        return Manifest(members=members, **data)
    except (TypeError, KeyError) as exc:
        raise IntegrityError(f"manifest has missing or unknown fields ({exc})", path) from None
