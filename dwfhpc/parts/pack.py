"""Exposure -> K part tarballs + manifests. CCDs are compressed in parallel across parts.

A part's tarball is written to a temporary name and renamed, then its manifest likewise, so a
reader that waits for the manifest never sees a half-written part. The raw file is only read.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import fitsio

from ..atomic import atomic_path, sha256_file
from ..codecs import DEFAULT_CODEC, DEFAULT_QLEVEL, DEFAULT_RATIO, get_codec
from ..errors import DwfError, FitsFormatError
from ..fitsio_utils import check_complete
from ..instruments import CCDHeader, Instrument, exposure_info, read_ccd_headers
from ..layout import ccd_stem, manifest_name, part_tar_name, under
from .manifest import Manifest, Member
from .schema import check_ccd, check_exposure_identity


@dataclass(frozen=True)
class Part:
    expid: str
    k: int
    n: int
    tar: Path
    manifest: Path


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


def split_into_parts(ccds: list[int], k: int) -> list[list[int]]:
    """K groups as equal as possible, CCDs dealt round-robin so each part spans the focal plane."""
    k = max(1, min(k, len(ccds)))
    return [ccds[i::k] for i in range(k)]


def _gather_ccds(raw: Path | list[Path], ccds: list[int] | None,
                 instrument: Instrument | None) -> tuple[Instrument, list[tuple[Path, CCDHeader]], Path]:
    """(instrument, [(file, CCD header)], representative file) for an MEF or a list of per-CCD files."""
    files = [Path(p) for p in raw] if isinstance(raw, (list, tuple)) else [Path(raw)]
    if not files:
        raise DwfError("nothing to pack: no raw files given")
    found: list[tuple[Path, CCDHeader]] = []
    inst = instrument
    expids = set()
    for f in files:
        check_complete(f)
        inst, _, headers = read_ccd_headers(f, inst)
        for h in headers:
            expids.add(inst.expid(h.header, f))
            inst.geometry(h.header, f)  # refuse a CCD whose sections are missing, here at the telescope
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
    return inst, chosen, files[0]


def pack_exposure(raw: str | os.PathLike[str] | list, out_dir: str | os.PathLike[str], *,
                  codec: str = DEFAULT_CODEC, parts: int = 4, jobs: int | None = None,
                  ratio: float = DEFAULT_RATIO, qlevel: float = DEFAULT_QLEVEL, ccds: list[int] | None = None,
                  instrument: Instrument | None = None, pool: ProcessPoolExecutor | None = None,
                  progress=None) -> list[Part]:
    """Compress an exposure's CCDs and write K part tarballs + manifests into ``out_dir``.

    ``raw`` is a DECam MEF or the list of an HSC visit's per-CCD files. The instrument's bad CCDs
    are left out (and focus/guide chips are never science CCDs). ``pool`` lets a caller share
    one process pool across exposures; ``progress(part)`` is called as each part is ready.
    """
    get_codec(codec, ratio=ratio, qlevel=qlevel)  # validate the name early
    inst, chosen, first = _gather_ccds(raw, ccds, instrument)
    info = exposure_info(first, inst)
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
    own_pool = pool is None
    executor = pool or ProcessPoolExecutor(max_workers=jobs or os.cpu_count() or 1)
    futures: dict[int, Future] = {}
    try:
        for group in groups:  # submit in part order so part 1 is ready first
            for ccd in group:
                f, h = by_ccd[ccd]
                job = _Job(str(f), h.hdu, ccd, h.header.tostring(), codec, params,
                           str(work / f"{ccd_stem(expid, ccd)}{suffix}"))
                futures[ccd] = executor.submit(_compress_one, job)
        result: list[Part] = []
        n = len(groups)
        for k, group in enumerate(groups, start=1):
            members = []
            for ccd in group:
                _, size, digest, dtype, shape, _ = futures[ccd].result()
                members.append(Member(ccd=ccd, name=f"{ccd_stem(expid, ccd)}{suffix}", codec=codec, bytes=size,
                                      sha256=digest, dtype=dtype, shape=shape,
                                      header=by_ccd[ccd][1].header.tostring()))
            part = _write_part(out_dir, work, info, k, n, codec, params, members, sorted(by_ccd))
            result.append(part)
            if progress:
                progress(part)
        return result
    finally:
        if own_pool:
            executor.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(work, ignore_errors=True)


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
    return Part(info.expid, k, n, tar_path, manifest_path)
