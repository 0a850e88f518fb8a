"""Exposure -> K part tarballs + manifests. CCDs are compressed in parallel across parts.

A part's tarball is written to a temporary name and renamed, then its manifest likewise, so a
reader that waits for the manifest never sees a half-written part. The raw file is only read.

With codec ``passthrough`` (what ``auto`` picks when every CCD of the exposure is a lossless
tile-compressed HDU, as DECam's fpack'd raws are) nothing is decompressed: each member is the
CCD's compressed HDU copied from the raw (:mod:`dwfhpc.codecs.passthrough`), in the calling
thread (a copy is I/O, no process pool is started). Its manifest entry: ``bytes``/``sha256`` of
the member file as stored, ``dtype``/``shape`` of the decompressed image (ZBITPIX 16 + BZERO
32768 -> uint16; [ZNAXIS2, ZNAXIS1]), ``codec`` ``passthrough``, and the raw's ZCMPTYPE as the
card ``DWFZCMP`` in the member's header (so the restored raw says how its pixels travelled).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import fitsio

from ..atomic import atomic_path, sha256_file
from ..codecs import AUTO, DEFAULT_CODEC, DEFAULT_QLEVEL, DEFAULT_RATIO, get_codec, resolve_codec
from ..codecs.passthrough import HduSpan, check_passthrough, copy_member, image_shape, scan_hdus, zcmptype
from ..errors import DwfError, FitsFormatError
from ..fitsio_utils import check_complete
from ..instruments import CCDHeader, ExposureInfo, Instrument, detect, identify, read_ccd_headers
from ..layout import ccd_stem, manifest_name, part_tar_name, under
from ..night import observation_time
from .manifest import Manifest, Member
from .schema import check_ccd, check_exposure_identity


@dataclass(frozen=True)
class Part:
    expid: str
    k: int
    n: int
    tar: Path
    manifest: Path
    codec: str = ""  # the codec the members were made with (``auto`` resolved)


@dataclass(frozen=True)
class _Job:
    """One CCD to compress (sent to a worker process)."""

    raw: str
    hdu: int
    ccd: int
    header: str
    codec: str
    params: dict
    out: str


def _compress_one(job: _Job) -> tuple[int, int, str, str, list[int], float]:
    """Read one CCD's raw pixels and write its member file; returns (ccd, bytes, sha256, dtype, shape, seconds)."""
    from astropy.io import fits

    t = time.perf_counter()
    try:
        with fitsio.FITS(job.raw) as f:
            data = f[job.hdu].read()
    except (OSError, ValueError) as exc:
        raise FitsFormatError(f"cannot read CCD {job.ccd} (HDU {job.hdu}): {exc}", job.raw) from None
    if data is None or data.ndim != 2:
        raise FitsFormatError(f"CCD {job.ccd} (HDU {job.hdu}) has no 2-D image", job.raw)
    data = data.astype("uint16", copy=False)
    codec = get_codec(job.codec, **job.params)
    codec.compress(fits.Header.fromstring(job.header), data, Path(job.out))
    return job.ccd, os.path.getsize(job.out), sha256_file(job.out), "uint16", list(data.shape), time.perf_counter() - t


@dataclass(frozen=True)
class _CopyJob:
    """One CCD to pass through: its compressed HDU in the raw file."""

    raw: str
    span: HduSpan
    ccd: int
    out: str


def _copy_one(job: _CopyJob) -> tuple[int, int, str, str, list[int], float]:
    """Copy one CCD's compressed HDU into its member file (no decompression); returns as :func:`_compress_one`."""
    t = time.perf_counter()
    size, digest = copy_member(job.raw, job.span, job.out)
    return job.ccd, size, digest, "uint16", image_shape(job.span), time.perf_counter() - t


def split_into_parts(ccds: list[int], k: int) -> list[list[int]]:
    """K groups as equal as possible, CCDs dealt round-robin so each part spans the focal plane."""
    k = max(1, min(k, len(ccds)))
    return [ccds[i::k] for i in range(k)]


def _gather_ccds(raw: Path | list[Path], ccds: list[int] | None,
                 instrument: Instrument | None) -> tuple[Instrument, list[tuple[Path, CCDHeader]], Path, ExposureInfo]:
    """(instrument, [(file, CCD header)], representative file, its exposure identity) for an MEF or per-CCD files."""
    files = [Path(p) for p in raw] if isinstance(raw, (list, tuple)) else [Path(raw)]
    if not files:
        raise DwfError("nothing to pack: no raw files given")
    found: list[tuple[Path, CCDHeader]] = []
    inst = instrument
    expids = set()
    info: ExposureInfo | None = None
    for f in files:
        check_complete(f)
        inst, primary, headers = _read_headers(f, inst)
        if info is None:
            info = _exposure_info(inst, f, primary, headers)
        for h in headers:
            expids.add(inst.expid(h.header, f))
            _check_geometry(inst, h.header, f)  # refuse a CCD whose sections are missing, here at the telescope
            found.append((f, h))
    if len(expids) > 1:
        raise DwfError(f"files belong to different exposures: {', '.join(sorted(expids))}")
    wanted = set(ccds) if ccds else set(inst.good_ccds)
    chosen = [(f, h) for f, h in found if h.ccd in wanted and h.ccd not in inst.bad_ccds]
    if ccds:
        missing = sorted(set(ccds) - {h.ccd for _, h in found})
        if missing:
            raise DwfError(f"CCD(s) {missing} not in the file(s)", files[0])
    if not chosen:
        raise DwfError("no science CCDs to pack", files[0])
    chosen.sort(key=lambda fh: fh[1].ccd)
    return inst, chosen, files[0], info


def _check_geometry(inst: Instrument, header, path: Path) -> None:
    """``inst.geometry(header)``; a CCD from a compressed HDU has its size as RAWNAX1/2 only, which not
    every instrument model reads (HSC's reads NAXIS/ZNAXIS): then it is checked with that size as NAXIS."""
    try:
        inst.geometry(header, path)
    except FitsFormatError:
        if "RAWNAX1" not in header or "RAWNAX2" not in header or "NAXIS1" in header:
            raise
        h = header.copy()
        h["NAXIS1"], h["NAXIS2"] = int(header["RAWNAX1"]), int(header["RAWNAX2"])
        inst.geometry(h, path)


def _read_headers(path: Path, inst: Instrument | None) -> tuple[Instrument, object, list[CCDHeader]]:
    """:func:`read_ccd_headers`; a file whose primary names no instrument (an fpack'd per-CCD file keeps
    every card in its compressed HDU 1) is recognised from HDU 1."""
    try:
        return read_ccd_headers(path, inst)
    except FitsFormatError as exc:
        if inst is not None or "unknown instrument" not in exc.problem:
            raise
        try:
            from astropy.io import fits

            header = fits.getheader(path, 1)
        except (OSError, IndexError, ValueError):
            raise exc from None
        if identify(header) is None:
            raise
        return read_ccd_headers(path, detect(header, path))


def _exposure_info(inst: Instrument, path: Path, primary, headers: list[CCDHeader]) -> ExposureInfo:
    """:func:`~dwfhpc.instruments.exposure_info` from the headers already read (it would read them all again)."""
    header = headers[0].header if headers else primary
    return ExposureInfo(
        instrument=inst.name, expid=inst.expid(header, path), expnum=inst.expnum(header, path),
        night=inst.night(header, path), obstype=inst.obstype(header), kind=inst.kind(header),
        filter=inst.filter(header), field=inst.field(header),
        date_obs=str(header.get("DATE-OBS", "")).strip() or observation_time(header, str(path)).isoformat(
            timespec="milliseconds").replace("+00:00", ""),
        exptime=float(header.get("EXPTIME", 0.0)), ccds=tuple(c.ccd for c in headers),
    )


def pack_exposure(raw: str | os.PathLike[str] | list, out_dir: str | os.PathLike[str], *,
                  codec: str = DEFAULT_CODEC, parts: int = 4, jobs: int | None = None,
                  ratio: float = DEFAULT_RATIO, qlevel: float = DEFAULT_QLEVEL, ccds: list[int] | None = None,
                  instrument: Instrument | None = None, pool: ProcessPoolExecutor | None = None,
                  progress=None) -> list[Part]:
    """Compress an exposure's CCDs and write K part tarballs + manifests into ``out_dir``.

    ``raw`` is a DECam MEF or the list of an HSC visit's per-CCD files. ``codec`` ``auto`` packs with
    ``passthrough`` when every chosen CCD is a lossless tile-compressed HDU, else ``rice``; an explicit
    ``passthrough`` on a CCD that is not is an error naming the file. The instrument's bad CCDs
    are left out (and focus/guide chips are never science CCDs). ``pool`` lets a caller share
    one process pool across exposures; ``progress(part)`` is called as each part is ready.
    """
    if codec != AUTO:
        get_codec(codec, ratio=ratio, qlevel=qlevel)  # validate the name early
    inst, chosen, first, info = _gather_ccds(raw, ccds, instrument)
    spans: dict[int, HduSpan] = {}
    if codec in (AUTO, "passthrough"):  # headers only: where each CCD's HDU lies and how it is compressed
        by_file: dict[Path, list[HduSpan]] = {}
        for f, h in chosen:
            if f not in by_file:
                by_file[f] = scan_hdus(f)
            spans[h.ccd] = by_file[f][h.hdu]
        codec = resolve_codec(codec, list(spans.values()))
        if codec == "passthrough":
            for f, h in chosen:
                check_passthrough(f, spans[h.ccd], h.ccd)
    check_exposure_identity(info, first)  # the receiver's patterns: nothing it would refuse is named or sent
    for f, h in chosen:
        check_ccd(h.ccd, "ccd", info.instrument, f)
    expid = info.expid
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = under(out_dir, ("expid", f".{expid}.packing"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    params = {"ratio": ratio} if codec == "jp2" else {"qlevel": qlevel} if codec == "rice-q" else {}
    suffix = get_codec(codec, **params).suffix
    by_ccd = {h.ccd: (f, h) for f, h in chosen}
    groups = split_into_parts(sorted(by_ccd), parts)
    passthrough = codec == "passthrough"
    own_pool = pool is None and not passthrough
    executor = None if passthrough else pool or ProcessPoolExecutor(max_workers=jobs or os.cpu_count() or 1)
    pending: dict[int, Callable[[], tuple]] = {}
    try:
        for group in groups:  # submit in part order so part 1 is ready first
            for ccd in group:
                f, h = by_ccd[ccd]
                out = str(work / f"{ccd_stem(expid, ccd)}{suffix}")
                if passthrough:  # copied when its part is written: cheap, in this thread
                    pending[ccd] = partial(_copy_one, _CopyJob(str(f), spans[ccd], ccd, out))
                else:
                    job = _Job(str(f), h.hdu, ccd, h.header.tostring(), codec, params, out)
                    pending[ccd] = executor.submit(_compress_one, job).result
        result: list[Part] = []
        n = len(groups)
        for k, group in enumerate(groups, start=1):
            members = []
            for ccd in group:
                _, size, digest, dtype, shape, _ = pending[ccd]()
                header = by_ccd[ccd][1].header
                text = _with_card(header, "DWFZCMP", zcmptype(spans[ccd]), "tiles the CCD travelled in (ZCMPTYPE)") \
                    if passthrough else header.tostring()
                members.append(Member(ccd=ccd, name=f"{ccd_stem(expid, ccd)}{suffix}", codec=codec, bytes=size,
                                      sha256=digest, dtype=dtype, shape=shape, header=text))
            part = _write_part(out_dir, work, info, k, n, codec, params, members, sorted(by_ccd))
            result.append(part)
            if progress:
                progress(part)
        return result
    finally:
        if own_pool and executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(work, ignore_errors=True)


def _with_card(header, key: str, value: str, comment: str) -> str:
    """``header.tostring()`` with one more card before END (without copying the header)."""
    from astropy.io import fits

    if key in header:
        h = header.copy()
        h[key] = (value, comment)
        return h.tostring()
    text = header.tostring(endcard=False, padding=False) + fits.Card(key, value, comment).image + "END".ljust(80)
    return text + " " * (-len(text) % 2880)


def _write_part(out_dir: Path, work: Path, info, k: int, n: int, codec: str, params: dict,
                members: list[Member], all_ccds: list[int]) -> Part:
    tar_path = under(out_dir, ("expid", part_tar_name(info.expid, k, n)))
    with atomic_path(tar_path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for m in members:
                ti = tar.gettarinfo(str(work / m.name), arcname=m.name)
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = ""
                ti.mode = 0o644
                with open(work / m.name, "rb") as fh:
                    tar.addfile(ti, fh)
    manifest = Manifest(
        instrument=info.instrument, expid=info.expid, expnum=info.expnum, night=info.night, obstype=info.obstype,
        kind=info.kind, filter=info.filter, field=info.field, date_obs=info.date_obs, exptime=info.exptime,
        part=k, parts=n, codec=codec, codec_params=params, tar_name=tar_path.name,
        tar_bytes=tar_path.stat().st_size, tar_sha256=sha256_file(tar_path), members=members,
        ccds_in_exposure=all_ccds, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    manifest_path = manifest.write(under(out_dir, ("expid", manifest_name(info.expid, k, n))))
    for m in members:
        (work / m.name).unlink(missing_ok=True)
    return Part(info.expid, k, n, tar_path, manifest_path, codec)
