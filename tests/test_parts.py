"""Packing an exposure into parts and taking them apart again, including every kind of bad input."""

import io
import os
import re
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


# --------------------------------------------------------------------------- issue 19: the schema and the cross-checks
from dwfhpc.errors import DwfError  # noqa: E402
from dwfhpc.layout import UnsafePathError, product_paths, under  # noqa: E402
from dwfhpc.parts.schema import SchemaError, check_manifest_data  # noqa: E402


def _rewrite(mpath: Path, **changes) -> None:
    m = json.loads(mpath.read_text())
    m.update(changes)
    mpath.write_text(json.dumps(m))


@pytest.mark.parametrize("field,value", [
    ("night", "../../../../x-night"), ("expid", "../../x-exp"), ("instrument", "../decam"), ("filter", "g/../../x"),
    ("field", "$(reboot)"), ("codec", "rice;rm"), ("tar_name", "../DECam_00000777.p1of2.tar"), ("night", "2026-13-01"),
    ("night", "2026-11-24\n"), ("expnum", 778), ("expnum", -1), ("tar_bytes", -5), ("part", True), ("parts", 10**40),
    ("exptime", float("nan")), ("kind", "science "), ("date_obs", "yesterday"), ("tar_sha256", "AB" * 32),
])
def test_every_bad_field_is_named(parts, field, value):
    _rewrite(parts[0].manifest, **{field: value})
    with pytest.raises(SchemaError) as exc:
        read_manifest(parts[0].manifest)
    assert exc.value.problem.startswith("field ") and (field in exc.value.problem or "expid" in exc.value.problem)


def test_members_are_checked_against_expid_ccd_and_the_instrument(parts):
    m = json.loads(parts[0].manifest.read_text())
    for change, named in [({"ccd": 99}, "members[0].ccd"), ({"name": "../../x.fits.fz"}, "members[0].name"),
                          ({"name": "DECam_00000777_35.fits.fz"}, "members[0].name"), ({"bytes": -1}, "members[0].bytes"),
                          ({"dtype": "object"}, "members[0].dtype"), ({"shape": [1, 2, 3]}, "members[0].shape"),
                          ({"header": "x" * 79}, "members[0].header"), ({"extra": 1}, "members[0].extra")]:
        bad = json.loads(json.dumps(m))
        bad["members"][0].update(change)
        with pytest.raises(SchemaError, match=rf"field {re.escape(named)}"):
            check_manifest_data(bad)
    bad = json.loads(json.dumps(m))
    bad["members"].append(bad["members"][0])
    with pytest.raises(SchemaError, match="listed twice"):
        check_manifest_data(bad)


def test_a_manifest_under_another_parts_name_is_refused(parts, tmp_path):
    other = tmp_path / parts[1].manifest.name
    shutil.copyfile(parts[0].manifest, other)
    with pytest.raises(SchemaError, match="field expid: the manifest describes DECam_00000777.p1of2"):
        read_manifest(other)


def test_oversized_and_special_manifests_are_refused_unread(tmp_path):
    big = tmp_path / "DECam_00000001.p1of1.manifest.json"
    with open(big, "wb") as fh:
        fh.truncate(100 * 1024 * 1024)  # sparse: refused on its size, never read
    with pytest.raises(SchemaError, match="field manifest: is 104857600 bytes"):
        read_manifest(big)
    fifo = tmp_path / "DECam_00000002.p1of1.manifest.json"
    os.mkfifo(fifo)
    with pytest.raises(SchemaError, match="not a regular file"):  # does not block on the FIFO
        read_manifest(fifo)
    deep = tmp_path / "DECam_00000003.p1of1.manifest.json"
    deep.write_text("[" * 200_000)
    with pytest.raises(IntegrityError, match="not valid JSON"):
        read_manifest(deep)


def test_layout_keeps_every_path_under_its_root(tmp_path):
    with pytest.raises(UnsafePathError, match="field night"):
        product_paths(tmp_path, "../../x", "DECam_00000001", 1)
    with pytest.raises(UnsafePathError, match="field expid"):
        product_paths(tmp_path, "2026-11-24", "..", 1)
    (tmp_path / "products").mkdir()
    (tmp_path / "products" / "2026-11-24").symlink_to(tmp_path.parent)  # a link already on disk
    with pytest.raises(UnsafePathError, match="outside"):
        under(tmp_path / "products", ("night", "2026-11-24"), ("expid", "DECam_00000001"))
    assert under(tmp_path, ("night", "2026-11-24")) == tmp_path / "2026-11-24"


def _forge_identity(part, tmp_path: Path, expnum: int) -> Path:
    """The part re-labelled as exposure ``expnum``: manifest, names and the manifest's headers agree, the members' FITS do not."""
    from dwfhpc.atomic import sha256_file

    m = json.loads(part.manifest.read_text())
    old, new = m["expid"], f"DECam_{expnum:08d}"
    folder = tmp_path / "forged"
    folder.mkdir()
    tar = folder / f"{new}.p{m['part']}of{m['parts']}.tar"
    with tarfile.open(part.tar) as src, tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as dst:
        for info in src:
            data = src.extractfile(info).read()
            info.name = info.name.replace(old, new)
            dst.addfile(info, io.BytesIO(data))
    for mm in m["members"]:
        mm["name"] = mm["name"].replace(old, new)
        h = fits.Header.fromstring(mm["header"])
        h["EXPNUM"] = expnum
        mm["header"] = h.tostring()
    m.update(expid=new, expnum=expnum, tar_name=tar.name, tar_bytes=tar.stat().st_size, tar_sha256=sha256_file(tar))
    mpath = folder / tar.name.replace(".tar", ".manifest.json")
    mpath.write_text(json.dumps(m))
    return tar


def test_node_crosscheck_refuses_a_member_whose_header_disagrees(parts, tmp_path):
    from dwfhpc.node.crosscheck import check_manifest_headers
    from dwfhpc.node.stage import stage_ccd

    tar = _forge_identity(parts[0], tmp_path, 778)
    m = verify_part(tar)  # the schema and the tarball are fine
    check_manifest_headers(m)  # so are the headers the manifest carries
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(IntegrityError, match=r"header EXPNUM=777 does not match the manifest \(field expnum: 778\)"):
        stage_ccd(tar, m, m.ccds[0], scratch)
    good = read_manifest(parts[0].manifest)
    staged = stage_ccd(parts[0].tar, good, good.ccds[0], tmp_path / "ok")
    assert staged.raw.is_file()


def test_node_crosscheck_names_ccd_and_night(parts):
    from dwfhpc.node.crosscheck import check_header

    m = read_manifest(parts[0].manifest)
    h = m.members[0].fits_header()
    check_header(h, m, m.ccds[0], what="t")
    with pytest.raises(IntegrityError, match="CCDNUM=.*does not match the manifest.*field ccd"):
        check_header(h, m, m.ccds[0] + 1, what="t")
    h["DATE-OBS"] = "2026-10-01T03:00:00.000"
    with pytest.raises(IntegrityError, match="DATE-OBS.*does not match the manifest"):
        check_header(h, m, m.ccds[0], what="t")


def test_task_spec_identity_is_checked(parts, tmp_path):
    from dwfhpc.config import load_site
    from dwfhpc.node import TaskSpec

    site = load_site("local", workdir=tmp_path)
    spec = TaskSpec.from_site(site, parts[0].manifest, parts[0].tar)
    path = spec.write(tmp_path / "spec.json")
    assert TaskSpec.read(path).expid == "DECam_00000777"
    original = path.read_text()
    for key, value in [("night", "../../x"), ("expid", "../../x-exp"), ("ccds", [25, 99]), ("filter", "../g"),
                       ("ccds", ["25"]), ("attempt", -1), ("part_tar", "/x/DECam_00000001.p1of2.tar"), ("qlevel", "4")]:
        data = json.loads(original)
        data[key] = value
        path.write_text(json.dumps(data))
        with pytest.raises(DwfError, match=rf"field {key}"):
            TaskSpec.read(path)


def test_pack_refuses_an_exposure_whose_headers_would_make_unsafe_names(raw, tmp_path):
    bad = tmp_path / "DECam_00000777.fits.fz"
    shutil.copy(raw, bad)
    with fits.open(bad, mode="update") as hdul:
        hdul[0].header["FILTER"] = "../../etc SDSS"
    with pytest.raises(SchemaError, match="field filter"):
        pack_exposure(bad, tmp_path / "out", parts=1, jobs=1)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_watcher_records_and_skips_bad_names_and_identities(raw, tmp_path):
    from dwfhpc.push.journal import Journal
    from dwfhpc.push.watcher import Watcher

    folder = tmp_path / "raw"
    folder.mkdir()
    shutil.copy(raw, folder / "DECam_00000777.fits.fz")
    with fits.open(folder / "DECam_00000777.fits.fz", mode="update") as hdul:
        hdul[0].header["OBJECT"] = "DWF; rm -rf /"
    shutil.copy(raw, folder / "DECam_0000\n0778.fits.fz")
    j = Journal(tmp_path / "j.sqlite")
    w = Watcher(folder, j, patterns=["DECam_*.fits.fz"], stable_seconds=0, incomplete_timeout=60)
    r = w.poll()
    assert r.ready == [] and len(r.failed) == 2
    reasons = dict(r.failed)
    assert "field field" in reasons[str(folder / "DECam_00000777.fits.fz")]
    assert "control character" in reasons[str(folder / "DECam_0000\n0778.fits.fz")]
    assert j.file_state(str(folder / "DECam_00000777.fits.fz"))["state"] == "failed"
    assert w.poll().failed == [] and j.exposure("DECam_00000777") is None  # recorded once, never packed
    j.close()
