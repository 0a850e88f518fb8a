"""The part manifest: a schema-versioned JSON description of one part tarball and its members."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from astropy.io import fits

from ..atomic import atomic_write_text
from ..errors import IntegrityError
from .schema import SCHEMA, check_manifest_data, check_manifest_file_name, read_manifest_text


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


def read_manifest(path: str | os.PathLike[str], *, check_name: bool = True) -> Manifest:
    """Load a manifest and check it against the schema (:mod:`dwfhpc.parts.schema`).

    A damaged, foreign, oversized or inconsistent file is an :class:`IntegrityError` whose text
    names the field. ``check_name`` also requires the file's own name to be the one its expid,
    part and parts give (``<expid>.p<k>of<K>.manifest.json``).
    """
    path = Path(path)
    try:
        text = read_manifest_text(path)
    except FileNotFoundError:
        raise IntegrityError("manifest is missing", path) from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:  # ValueError: an int of > 4300 digits
        raise IntegrityError(f"manifest is not valid JSON ({str(exc)[:200]})", path) from None
    check_manifest_data(data, path)
    members = [Member(**m) for m in data.pop("members")]
    manifest = Manifest(members=members, **data)
    if check_name:
        check_manifest_file_name(manifest, path)
    return manifest
