"""Packing an exposure into parts and taking them apart again, including every kind of bad input."""

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from dwfhpc.cli import main
from dwfhpc.errors import FitsFormatError, IntegrityError
from dwfhpc.layout import manifest_for_tar
from dwfhpc.parts import SCHEMA, extract_member, pack_exposure, read_manifest, unpack_part, verify_part
from dwfhpc.simulate import simulate_decam_exposure, simulate_hsc_visit

CCDS = [25, 32, 35, 61]  # 61 (N30) is a bad CCD: never packed


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return simulate_decam_exposure(tmp_path_factory.mktemp("raw"), expnum=777, ccds=CCDS, seed=5)


@pytest.fixture()
def parts(raw, tmp_path):
    before = raw.read_bytes()
    made = pack_exposure(raw, tmp_path / "out", codec="rice", parts=2, jobs=2)
    assert raw.read_bytes() == before  # the original is never modified
    return made


def test_parts_are_self_describing_and_complete(parts, raw):
    assert [(p.k, p.n) for p in parts] == [(1, 2), (2, 2)]
    all_ccds = []
    for p in parts:
        m = read_manifest(p.manifest)
        assert m.schema == SCHEMA and m.expid == "DECam_00000777" and m.expnum == 777
        assert m.night == "2026-11-24" and m.kind == "science" and m.filter == "g" and m.part == p.k
        assert m.tar_bytes == p.tar.stat().st_size
        for member in m.members:
            assert member.codec == "rice" and member.shape == [4146, 2160] and member.dtype == "uint16"
            assert member.fits_header()["CCDNUM"] == member.ccd
        all_ccds += m.ccds
    assert sorted(all_ccds) == [25, 32, 35]
    assert not list(parts[0].tar.parent.glob(".*"))  # no temporary leftovers


def test_unpack_restores_bit_exact_ccds(parts, raw, tmp_path):
    out = tmp_path / "unpacked"
    files = []
    for p in parts:
        files += unpack_part(p.tar, out)
    with fits.open(raw) as original:
        by_ccd = {h.header["CCDNUM"]: h.data for h in original[1:]}
    for f in files:
        with fits.open(f) as hdul:
            assert np.array_equal(hdul[0].data, by_ccd[hdul[0].header["CCDNUM"]])


def test_extract_member_streams_one_verified_ccd(parts, tmp_path):
    m = read_manifest(parts[0].manifest)
    path = extract_member(parts[0].tar, m, m.ccds[0], tmp_path / "one")
    assert path.name == m.members[0].name and path.stat().st_size == m.members[0].bytes
    assert [p.name for p in (tmp_path / "one").iterdir()] == [path.name]


def test_tampered_tarball_is_refused_and_nothing_written(parts, tmp_path):
    tar = parts[0].tar
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tar.write_bytes(bytes(data))
    out = tmp_path / "dest"
    with pytest.raises(IntegrityError, match="sha256"):
        unpack_part(tar, out)
    with pytest.raises(IntegrityError, match="tarball sha256"):
        verify_part(tar, members=False)  # the inbox's check
    assert not out.exists()
    assert main(["unpack", str(tar), "--out", str(out)]) == 2


def test_manifest_that_does_not_match(parts, tmp_path):
    mpath = parts[1].manifest
    m = json.loads(mpath.read_text())
    m["tar_bytes"] += 1
    mpath.write_text(json.dumps(m))
    with pytest.raises(IntegrityError, match="bytes, the manifest says"):
        verify_part(parts[1].tar)
    mpath.write_text("{not json")
    with pytest.raises(IntegrityError, match="not valid JSON"):
        verify_part(parts[1].tar)


def _forge(tar_path: Path, add) -> None:
    """Rewrite a part's tarball with an extra member and re-sign the manifest so only the member check can catch it."""
    with tarfile.open(tar_path, "a") as t:
        add(t)
    mpath = manifest_for_tar(tar_path)
    m = json.loads(mpath.read_text())
    from dwfhpc.atomic import sha256_file
    m["tar_bytes"], m["tar_sha256"] = tar_path.stat().st_size, sha256_file(tar_path)
    mpath.write_text(json.dumps(m))


@pytest.mark.parametrize("kind,message", [
    ("traversal", "unsafe path"), ("absolute", "unsafe path"), ("symlink", "links are refused"),
    ("device", "not a regular file"), ("unlisted", "not listed in the manifest"),
])
def test_unsafe_members_are_refused(parts, tmp_path, kind, message):
    def add(t: tarfile.TarFile) -> None:
        if kind == "traversal":
            info, payload = tarfile.TarInfo("../../evil.fits"), b"x" * 10
        elif kind == "absolute":
            info, payload = tarfile.TarInfo("/etc/evil"), b"x" * 10
        elif kind == "symlink":
            info, payload = tarfile.TarInfo("link.fits"), None
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "device":
            info, payload = tarfile.TarInfo("dev.fits"), None
            info.type = tarfile.CHRTYPE
        else:
            info, payload = tarfile.TarInfo("extra.fits"), b"x" * 10
        if payload is not None:
            info.size = len(payload)
            t.addfile(info, io.BytesIO(payload))
        else:
            t.addfile(info)
    _forge(parts[0].tar, add)
    out = tmp_path / "dest"
    with pytest.raises(IntegrityError, match=message):
        unpack_part(parts[0].tar, out)
    with pytest.raises(IntegrityError, match=message):
        verify_part(parts[0].tar, members=False)  # the inbox's check reads the headers by seeking
    assert not out.exists() and not (tmp_path / "evil.fits").exists()


def test_inbox_check_catches_a_missing_member_and_a_size_mismatch(parts):
    """members=False still checks the listing: a member dropped, or one whose header size differs."""
    tar = parts[0].tar
    m = read_manifest(parts[0].manifest)
    first = m.members[0].name
    with tarfile.open(tar) as t:
        kept = [(info, t.extractfile(info).read()) for info in t if info.name != first]
    with tarfile.open(tar, "w") as t:
        for info, data in kept:
            t.addfile(info, io.BytesIO(data))
    _forge(tar, lambda t: None)
    with pytest.raises(IntegrityError, match=f"{first}.*missing"):
        verify_part(tar, members=False)

    def grown(t: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(first)
        info.size = m.members[0].bytes + 1
        t.addfile(info, io.BytesIO(b"\0" * info.size))
    _forge(tar, grown)
    with pytest.raises(IntegrityError, match="bytes, the manifest says"):
        verify_part(tar, members=False)


def test_hsc_visit_packs_from_per_ccd_files(tmp_path):
    files = simulate_hsc_visit(tmp_path / "raw", visit=903334, ccds=[0, 1, 23], seed=1)
    parts = pack_exposure(files, tmp_path / "out", codec="rice", parts=2, jobs=1)
    m = read_manifest(parts[0].manifest)
    assert m.instrument == "hsc" and m.expid == "HSC_0903334" and m.parts == 2
    assert sorted(c for p in parts for c in read_manifest(p.manifest).ccds) == [0, 1, 23]
    restored = unpack_part(parts[1].tar, tmp_path / "un")
    assert fits.getheader(restored[0])["DET-ID"] in (1, 23)


def test_truncated_and_non_fits_raw_files(raw, tmp_path):
    cut = tmp_path / "DECam_00000777.fits.fz"
    cut.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])
    with pytest.raises(FitsFormatError, match="truncated"):
        pack_exposure(cut, tmp_path / "out")
    text = tmp_path / "notes.fits"
    text.write_text("hello")
    with pytest.raises(FitsFormatError, match="not a FITS file"):
        pack_exposure(text, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_geometry_keyword_is_named(raw, tmp_path):
    broken = tmp_path / "DECam_00000777.fits.fz"
    shutil.copy(raw, broken)
    with fits.open(broken, mode="update") as hdul:
        del hdul[1].header["DATASECA"]
    with pytest.raises(FitsFormatError, match="missing header keyword.*DATASECA"):
        pack_exposure(broken, tmp_path / "out")
