"""The one schema check of a part manifest (and of a task spec's identity fields).

Everything in a manifest comes from the other side of a network and is checked before any of it
is used: every field typed and bounded, every value that becomes part of a path, a job name or a
command matched against a strict pattern, and the fields that describe the same thing checked
against each other (the tar name against expid/part/parts, the member names against expid, CCD
and codec, the file's own name against the manifest). A problem is an :class:`IntegrityError`
whose text starts with ``field <name>:`` so the quarantine reason names the field.

Patterns (what the packer writes today, ``dwfhpc.part/1``):

* ``instrument``: a key of :data:`dwfhpc.instruments.INSTRUMENTS`
* ``expid``: exactly what the instrument model builds from ``expnum`` (``DECam_%08d``, ``HSC_%07d``)
* ``night``: ``YYYY-MM-DD``, a real date, the UTC date of ``date_obs`` or the day before
* ``filter``: letters, digits, ``_ . + -`` (no leading dot), at most 32 characters, or empty
* ``field`` / ``obstype``: printable ASCII without ``/ \\ $ ` ; | & < > " '``, not only dots, at most 68 characters
* ``codec``: one of :data:`dwfhpc.codecs.CODEC_NAMES`; members' names ``<expid>_<ccd:02d><suffix>``
* CCD numbers: within the instrument's science CCDs, each once
* sizes: non-negative integers below fixed limits; digests 64 lowercase hex digits
"""

from __future__ import annotations

import math
import os
import re
import stat
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from ..codecs import CODEC_NAMES, get_codec
from ..errors import IntegrityError
from ..instruments import INSTRUMENTS, KINDS
from ..layout import ccd_stem, manifest_name, parse_part_stem, part_tar_name

SCHEMA = "dwfhpc.part/1"

MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # a 62-CCD part with full headers is ~2 MB
MAX_TAR_BYTES = 1 << 40
MIN_TAR_BYTES = 512  # one tar header block
MAX_MEMBER_BYTES = 1 << 36
MAX_HEADER_CHARS = 1 << 20
MAX_AXIS = 100_000
MAX_EXPTIME = 1e6
DTYPES = ("uint16", "int16", "int32", "uint32", "float32")
CODEC_PARAMS = {"ratio": (0.0, 1000.0), "qlevel": (0.0, 1000.0)}

#: expid as each instrument model builds it from the exposure number, and the largest such number
EXPID_FORMAT: dict[str, tuple[str, re.Pattern, int]] = {
    "decam": ("DECam_{:08d}", re.compile(r"^DECam_[0-9]{8}\Z"), 99_999_999),
    "hsc": ("HSC_{:07d}", re.compile(r"^HSC_[0-9]{7}\Z"), 999_999),
}

NIGHT_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
DATE_OBS_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?)?\Z")
FILTER_RE = re.compile(r"^([A-Za-z0-9_+\-][A-Za-z0-9_.+\-]{0,31})?\Z")
TEXT_RE = re.compile(r"^[\x20-\x7e]{0,68}\Z")  # printable ASCII, a FITS string value's length
TEXT_FORBIDDEN = re.compile(r"[/\\$`;|&<>\"']")  # separators and shell metacharacters
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
CREATED_RE = re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?)?\Z")
HEADER_RE = re.compile(r"^[\x20-\x7e]*\Z")

_TOP_REQUIRED = ("instrument", "expid", "expnum", "night", "obstype", "kind", "filter", "field", "date_obs",
                 "exptime", "part", "parts", "codec", "codec_params", "tar_name", "tar_bytes", "tar_sha256",
                 "members", "schema")
_TOP_OPTIONAL = ("ccds_in_exposure", "created")
_MEMBER_KEYS = ("ccd", "name", "codec", "bytes", "sha256", "dtype", "shape", "header")


class SchemaError(IntegrityError):
    """A manifest or spec field that is missing, of the wrong type, out of bounds or inconsistent."""


def _fail(field: str, problem: str, path=None) -> SchemaError:
    return SchemaError(f"field {field}: {problem}", path)


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


# ----------------------------------------------------------------------------- typed fields
def check_int(value: Any, field: str, lo: int, hi: int, path=None) -> int:
    if type(value) is not int:  # bool is an int subclass: refused
        raise _fail(field, f"{_show(value)} is not an integer", path)
    if not lo <= value <= hi:
        raise _fail(field, f"{value if abs(value) < 10**20 else 'a huge number'} is outside {lo}..{hi}", path)
    return value


def check_number(value: Any, field: str, lo: float, hi: float, path=None) -> float:
    if type(value) not in (int, float):
        raise _fail(field, f"{_show(value)} is not a number", path)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise _fail(field, f"{value if abs(value) < 1e20 else 'a huge number'} is outside {lo:g}..{hi:g}", path)
    return float(value)


def check_str(value: Any, field: str, pattern: re.Pattern, what: str, path=None) -> str:
    if not isinstance(value, str):
        raise _fail(field, f"{_show(value)} is not a string", path)
    if not pattern.fullmatch(value):  # fullmatch: `$` would accept a trailing newline
        raise _fail(field, f"{_show(value)} is not {what}", path)
    return value


def check_text(value: Any, field: str, path=None) -> str:
    """Free text (OBJECT, OBSTYPE): printable ASCII, no path separator or shell expansion character."""
    check_str(value, field, TEXT_RE, "printable ASCII of at most 68 characters", path)
    if TEXT_FORBIDDEN.search(value):
        raise _fail(field, f"{_show(value)} contains one of / \\ $ ` ; | & < > \" '", path)
    if value and not value.strip(". "):
        raise _fail(field, f"{_show(value)} is only dots", path)
    return value


def check_instrument(value: Any, field: str = "instrument", path=None) -> str:
    if not isinstance(value, str) or value not in INSTRUMENTS or value not in EXPID_FORMAT:
        raise _fail(field, f"{_show(value)} is not one of {', '.join(INSTRUMENTS)}", path)
    return value


def check_night(value: Any, field: str = "night", path=None) -> str:
    check_str(value, field, NIGHT_RE, "a night YYYY-MM-DD", path)
    try:
        d = date.fromisoformat(value)
    except ValueError:
        raise _fail(field, f"{value!r} is not a calendar date", path) from None
    if not 1990 <= d.year <= 2200:
        raise _fail(field, f"{value!r} is outside the years 1990..2200", path)
    return value


def check_filter(value: Any, field: str = "filter", path=None) -> str:
    return check_str(value, field, FILTER_RE, "a filter name (letters, digits, _ . + -, at most 32)", path)


def expid_for(instrument: str, expnum: int) -> str:
    """The expid the instrument model builds for exposure number ``expnum``."""
    return EXPID_FORMAT[instrument][0].format(expnum)


def check_identity(instrument: Any, expid: Any, expnum: Any, path=None, *, expnum_known: bool = True) -> None:
    """instrument known, expnum in its range, expid exactly what the model builds from them."""
    check_instrument(instrument, path=path)
    fmt, pattern, top = EXPID_FORMAT[instrument]
    check_str(expid, "expid", pattern, f"a {instrument} exposure id ({fmt.format(0)})", path)
    check_int(expnum, "expnum", 0, top, path)
    if expnum_known:
        if expid != expid_for(instrument, expnum):
            raise _fail("expid", f"{expid!r} does not match expnum {expnum} (expected {expid_for(instrument, expnum)!r})",
                        path)


def check_ccd(value: Any, field: str, instrument: str, path=None) -> int:
    science = INSTRUMENTS[instrument].science_ccds
    check_int(value, field, min(science), max(science), path)
    if value not in science:
        raise _fail(field, f"CCD {value} is not a {instrument} science CCD", path)
    return value


def check_night_vs_date(night: str, date_obs: str, path=None) -> None:
    """A night is the local date at its start: for any longitude, DATE-OBS's UTC date or the day before."""
    if not date_obs:
        return
    utc = date.fromisoformat(date_obs[:10])
    if date.fromisoformat(night) not in (utc, utc - timedelta(days=1)):
        raise _fail("night", f"{night} cannot be the night of date_obs {date_obs} (expected {utc - timedelta(days=1)} "
                    f"or {utc})", path)


def check_exposure_identity(info, path=None) -> None:
    """The identity read from raw headers at the telescope (an :class:`~dwfhpc.instruments.ExposureInfo`).

    The same patterns as a manifest's, so nothing the receiver would refuse is ever packed or sent.
    """
    check_identity(info.instrument, info.expid, info.expnum, path)
    check_night(info.night, path=path)
    check_str(info.date_obs, "date_obs", DATE_OBS_RE, "an ISO date/time (DATE-OBS)", path)
    if info.date_obs:
        check_night_vs_date(info.night, info.date_obs, path)
    check_filter(info.filter, path=path)
    check_text(info.field, "field", path)
    check_text(info.obstype, "obstype", path)
    if info.kind not in KINDS:
        raise _fail("kind", f"{_show(info.kind)} is not one of {', '.join(KINDS)}", path)
    check_number(info.exptime, "exptime", 0.0, MAX_EXPTIME, path)
    for i, ccd in enumerate(info.ccds):
        check_ccd(ccd, f"ccds[{i}]", info.instrument, path)


# ----------------------------------------------------------------------------- manifest
def _keys(data: Any, field: str, required, optional, path) -> None:
    if not isinstance(data, dict):
        raise _fail(field, f"is a {type(data).__name__}, not an object", path)
    missing = [k for k in required if k not in data]
    if missing:
        raise _fail(f"{field}.{missing[0]}" if field != "manifest" else missing[0], "missing", path)
    unknown = sorted(str(k) for k in data if k not in required and k not in optional)
    if unknown:
        raise _fail(f"{field}.{unknown[0]}" if field != "manifest" else unknown[0],
                    f"unknown field ({len(unknown)} unknown: {_show(', '.join(unknown))})", path)


def check_manifest_data(data: Any, path=None) -> None:
    """Raise :class:`SchemaError` naming the first field of ``data`` (parsed JSON) that is not right."""
    if not isinstance(data, dict):
        raise _fail("manifest", f"is a JSON {type(data).__name__}, not an object", path)
    if data.get("schema") != SCHEMA:
        raise _fail("schema", f"{_show(data.get('schema'))} is not {SCHEMA!r} (not a dwfhpc part manifest)", path)
    _keys(data, "manifest", _TOP_REQUIRED, _TOP_OPTIONAL, path)
    inst = check_instrument(data["instrument"], path=path)
    check_identity(inst, data["expid"], data["expnum"], path)
    expid = data["expid"]
    check_night(data["night"], path=path)
    check_str(data["date_obs"], "date_obs", DATE_OBS_RE, "an ISO date/time (DATE-OBS)", path)
    check_night_vs_date(data["night"], data["date_obs"], path)
    check_text(data["obstype"], "obstype", path)
    if not isinstance(data["kind"], str) or data["kind"] not in KINDS:
        raise _fail("kind", f"{_show(data['kind'])} is not one of {', '.join(KINDS)}", path)
    check_filter(data["filter"], path=path)
    check_text(data["field"], "field", path)
    check_number(data["exptime"], "exptime", 0.0, MAX_EXPTIME, path)
    n_science = len(INSTRUMENTS[inst].science_ccds)
    parts = check_int(data["parts"], "parts", 1, n_science, path)
    part = check_int(data["part"], "part", 1, parts, path)
    codec = data["codec"]
    if not isinstance(codec, str) or codec not in CODEC_NAMES:
        raise _fail("codec", f"{_show(codec)} is not one of {', '.join(CODEC_NAMES)}", path)
    params = data["codec_params"]
    if not isinstance(params, dict):
        raise _fail("codec_params", f"{_show(params)} is not an object", path)
    for key, value in params.items():
        if key not in CODEC_PARAMS:
            raise _fail("codec_params", f"unknown parameter {_show(key)}", path)
        check_number(value, f"codec_params.{key}", *CODEC_PARAMS[key], path)
    if data["tar_name"] != part_tar_name(expid, part, parts):
        raise _fail("tar_name", f"{_show(data['tar_name'])} is not {part_tar_name(expid, part, parts)!r} "
                    "(from expid, part, parts)", path)
    check_int(data["tar_bytes"], "tar_bytes", MIN_TAR_BYTES, MAX_TAR_BYTES, path)
    check_str(data["tar_sha256"], "tar_sha256", SHA256_RE, "64 lowercase hex digits", path)
    created = data.get("created", "")
    check_str(created, "created", CREATED_RE, "an ISO time", path)

    members = data["members"]
    if not isinstance(members, list) or not 1 <= len(members) <= n_science:
        raise _fail("members", f"is not a list of 1..{n_science} members", path)
    suffix = get_codec(codec, **params).suffix
    seen: set[int] = set()
    for i, m in enumerate(members):
        where = f"members[{i}]"
        _keys(m, where, _MEMBER_KEYS, (), path)
        ccd = check_ccd(m["ccd"], f"{where}.ccd", inst, path)
        if ccd in seen:
            raise _fail(f"{where}.ccd", f"CCD {ccd} is listed twice", path)
        seen.add(ccd)
        want = f"{ccd_stem(expid, ccd)}{suffix}"
        if m["name"] != want:
            raise _fail(f"{where}.name", f"{_show(m['name'])} is not {want!r} (from expid, ccd, codec)", path)
        if m["codec"] != codec:
            raise _fail(f"{where}.codec", f"{_show(m['codec'])} is not the part's codec {codec!r}", path)
        check_int(m["bytes"], f"{where}.bytes", 0, MAX_MEMBER_BYTES, path)
        check_str(m["sha256"], f"{where}.sha256", SHA256_RE, "64 lowercase hex digits", path)
        if not isinstance(m["dtype"], str) or m["dtype"] not in DTYPES:
            raise _fail(f"{where}.dtype", f"{_show(m['dtype'])} is not one of {', '.join(DTYPES)}", path)
        shape = m["shape"]
        if not isinstance(shape, list) or len(shape) != 2:
            raise _fail(f"{where}.shape", f"{_show(shape)} is not [ny, nx]", path)
        for j, n in enumerate(shape):
            check_int(n, f"{where}.shape[{j}]", 1, MAX_AXIS, path)
        header = m["header"]
        if not isinstance(header, str) or len(header) > MAX_HEADER_CHARS or len(header) % 80:
            raise _fail(f"{where}.header", "is not FITS header cards (80-character records, at most 1 MiB)", path)
        if not HEADER_RE.fullmatch(header):
            raise _fail(f"{where}.header", "has characters that are not printable ASCII", path)
    in_exposure = data.get("ccds_in_exposure", [])
    if not isinstance(in_exposure, list) or len(in_exposure) > n_science:
        raise _fail("ccds_in_exposure", f"is not a list of at most {n_science} CCDs", path)
    for i, c in enumerate(in_exposure):
        check_ccd(c, f"ccds_in_exposure[{i}]", inst, path)
    if len(set(in_exposure)) != len(in_exposure):
        raise _fail("ccds_in_exposure", "lists a CCD twice", path)
    if in_exposure and not seen <= set(in_exposure):
        raise _fail("ccds_in_exposure", f"does not include the part's CCD(s) {sorted(seen - set(in_exposure))}", path)


def check_manifest_file_name(manifest, path: str | os.PathLike[str]) -> None:
    """The manifest's own file name is the one its expid/part/parts give (no manifest names another part)."""
    want = manifest_name(manifest.expid, manifest.part, manifest.parts)
    if Path(path).name != want:
        raise _fail("expid", f"the manifest describes {want[: -len('.manifest.json')]} but is named {Path(path).name!r}",
                    path)


def read_json_text(path: Path, limit: int = MAX_MANIFEST_BYTES, what: str = "manifest") -> str:
    """A JSON file's text: a regular file (no FIFO, device or folder) of at most ``limit`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise _fail(what, "is a folder, not a file", path) from None
    except OSError as exc:
        raise IntegrityError(f"{what} cannot be opened ({exc.strerror or exc})", path) from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _fail(what, "is not a regular file", path)
        if st.st_size > limit:
            raise _fail(what, f"is {st.st_size} bytes, more than the {limit} allowed", path)
        raw = fh.read(limit + 1)
    if len(raw) > limit:
        raise _fail(what, f"is more than the {limit} bytes allowed", path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntegrityError(f"{what} is not valid JSON (not UTF-8: {exc})", path) from None


def read_manifest_text(path: Path) -> str:
    return read_json_text(path, MAX_MANIFEST_BYTES, "manifest")


# ----------------------------------------------------------------------------- task spec
def check_spec_identity(spec) -> None:
    """A task spec's identity fields, with the manifest's patterns (raises :class:`SchemaError`)."""
    check_identity(spec.instrument, spec.expid, spec.expnum, expnum_known=spec.expnum != 0)  # 0: not given
    check_night(spec.night)
    check_filter(spec.filter)
    check_text(spec.field, "field")
    if not isinstance(spec.ccds, list) or not 1 <= len(spec.ccds) <= len(INSTRUMENTS[spec.instrument].science_ccds):
        raise _fail("ccds", "is not a list of the instrument's CCDs")
    for i, c in enumerate(spec.ccds):
        check_ccd(c, f"ccds[{i}]", spec.instrument)
    if len(set(spec.ccds)) != len(spec.ccds):
        raise _fail("ccds", "lists a CCD twice")
    for key in ("part_tar", "manifest", "products", "library", "masters"):
        value = getattr(spec, key)
        if not isinstance(value, str) or not value or "\x00" in value or len(value) > 4096:
            raise _fail(key, f"{_show(value)} is not a path", None)
    tar = Path(spec.part_tar).name
    parsed = parse_part_stem(tar[: -len(".tar")]) if tar.endswith(".tar") else None
    if parsed is None or parsed[0] != spec.expid:
        raise _fail("part_tar", f"{tar!r} is not a part tarball of {spec.expid}")
    if Path(spec.manifest).name != manifest_name(*parsed):
        raise _fail("manifest", f"{Path(spec.manifest).name!r} is not the manifest of {tar!r}")
    check_int(spec.attempt, "attempt", 1, 1000)
