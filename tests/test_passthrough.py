"""Pass-through packing: a raw that is already losslessly tile-compressed travels as its own bytes.

Raws are real tile-compressed files on the real headers shipped in ``dwfhpc/data`` (DECam
exposure 200666's 70 headers, HSC's HSCA90333426): the simulator's RICE MEF (cfitsio, no
checksums) and the same exposure through Debian's ``fpack`` (RICE_1 with CHECKSUM/DATASUM, as
the camera's raws are).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from conftest import missing
from dwfhpc.codecs import AUTO, CODEC_NAMES, DEFAULT_CODEC, decompress_member, get_codec
from dwfhpc.codecs.passthrough import copy_member, data_sum, not_passthrough, scan_hdus, verify_member
from dwfhpc.config import PushSettings
from dwfhpc.errors import DwfError, FitsFormatError, IntegrityError
from dwfhpc.instruments import exposure_info
from dwfhpc.node.stage import stage_ccd
from dwfhpc.parts import extract_member, pack_exposure, read_manifest, unpack_part
from dwfhpc.parts.pack import _gather_ccds
from dwfhpc.simulate import simulate_decam_exposure, simulate_hsc_visit

CCDS = [1, 2, 3, 4]
HSC_CCDS = [41, 42]


def _fpack(src: Path, out: Path) -> Path:
    """``src`` through Debian's fpack (RICE_1, row tiles, CHECKSUM/DATASUM): an uncompressed copy first."""
    if not shutil.which("fpack"):
        missing("fpack (Debian libcfitsio-bin) not installed")
    work = out.parent / f".{out.name}.work"
    work.mkdir(parents=True)
    plain = work / "plain.fits"
    if src.name.endswith(".fz"):  # an uncompressed MEF with the same headers and pixels
        with fits.open(src) as hdul:
            hdus = [fits.PrimaryHDU(header=hdul[0].header)]
            for hdu in hdul[1:]:
                hdus.append(fits.ImageHDU(data=hdu.data.astype(np.uint16), header=hdu.header))
            fits.HDUList(hdus).writeto(plain)
    else:
        shutil.copy(src, plain)
    subprocess.run(["fpack", str(plain)], check=True, capture_output=True)
    (work / "plain.fits.fz").rename(out)
    shutil.rmtree(work)
    return out


@pytest.fixture(scope="module")
def sim_raw(tmp_path_factory) -> Path:
    """The simulator's RICE MEF (compressed HDUs written by cfitsio, no checksums)."""
    return simulate_decam_exposure(tmp_path_factory.mktemp("sim"), expnum=4242, ccds=CCDS, seed=7)


@pytest.fixture(scope="module")
def fz_raw(sim_raw, tmp_path_factory) -> Path:
    """The same exposure fpack'd: every CCD HDU carries CHECKSUM and DATASUM."""
    return _fpack(sim_raw, tmp_path_factory.mktemp("fz") / "DECam_00004242.fits.fz")


def _pixels(raw: Path) -> dict[int, np.ndarray]:
    _, chosen, _, _ = _gather_ccds(raw, None, None)
    out = {}
    for f, h in chosen:
        with fitsio.FITS(str(f)) as ff:
            out[h.ccd] = ff[h.hdu].read().astype(np.uint16)
    return out


def _hdu_bytes(raw: Path) -> dict[int, bytes]:
    """Each science CCD's compressed HDU as it lies in the raw file (header + padded data)."""
    _, chosen, _, _ = _gather_ccds(raw, None, None)
    data = raw.read_bytes()
    spans = scan_hdus(raw)
    return {h.ccd: data[spans[h.hdu].header_start:spans[h.hdu].end] for _, h in chosen}


def _restored(files: list[Path]) -> dict[int, tuple[fits.Header, np.ndarray]]:
    out = {}
    for f in files:
        with fits.open(f) as hdul:
            out[int(hdul[0].header["CCDNUM"] if "CCDNUM" in hdul[0].header else hdul[0].header["DET-ID"])] = (
                hdul[0].header.copy(), hdul[0].data.copy())
    return out


# --------------------------------------------------------------------------- packing
@pytest.mark.parametrize("which", ["sim", "fpack"])
def test_auto_packs_a_compressed_decam_raw_by_copying_its_hdus(which, sim_raw, fz_raw, tmp_path):
    raw = sim_raw if which == "sim" else fz_raw
    assert DEFAULT_CODEC == AUTO and PushSettings().codec == AUTO
    before = raw.read_bytes()
    parts = pack_exposure(raw, tmp_path / "out", parts=2, jobs=1)  # default codec: auto
    assert raw.read_bytes() == before
    assert {p.codec for p in parts} == {"passthrough"}
    source = _hdu_bytes(raw)
    seen = []
    for p in parts:
        m = read_manifest(p.manifest)  # the schema accepts the codec
        assert m.codec == "passthrough" and m.codec_params == {}
        for member in m.members:
            assert member.codec == "passthrough" and member.name.endswith(".fits.fz")
            assert member.dtype == "uint16" and member.shape == [4146, 2160]  # from ZBITPIX/BZERO, ZNAXIS2/1
            assert member.fits_header()["DWFZCMP"] == "RICE_1"  # the raw's ZCMPTYPE
            assert member.fits_header()["CCDNUM"] == member.ccd
            path = extract_member(p.tar, m, member.ccd, tmp_path / "members")  # checks bytes + sha256
            assert path.stat().st_size == member.bytes
            spans = scan_hdus(path)
            body = path.read_bytes()[spans[1].header_start:]
            assert body == source[member.ccd]  # HDU 1 is the raw's compressed HDU, byte for byte
            assert spans[0].get("DWFCODEC") == "passthrough" and spans[0].data_bytes == 0
            verify_member(path)
            seen.append(member.ccd)
    assert sorted(seen) == CCDS


def test_passthrough_member_keeps_the_fpack_checksums(fz_raw, tmp_path):
    parts = pack_exposure(fz_raw, tmp_path / "out", codec="passthrough", parts=1, jobs=1)
    m = read_manifest(parts[0].manifest)
    path = extract_member(parts[0].tar, m, CCDS[0], tmp_path / "members")
    spans = scan_hdus(path)
    assert spans[1].get("CHECKSUM") and spans[1].get("DATASUM")
    with fits.open(path, checksum=True, disable_image_compression=True) as hdul:  # astropy agrees
        assert hdul[1]._checksum_valid and hdul[1]._datasum_valid


def test_round_trip_is_the_raw_every_other_codec_restores(fz_raw, tmp_path):
    """Pixels bit-exact with the raw; the restored file is the rice path's but for the DWF codec cards."""
    via = {}
    for codec in ("passthrough", "rice"):
        files = []
        for p in pack_exposure(fz_raw, tmp_path / codec, codec=codec, parts=2, jobs=1):
            files += unpack_part(p.tar, tmp_path / f"{codec}-ccds")
        via[codec] = _restored(files)
    original = _pixels(fz_raw)
    assert sorted(via["passthrough"]) == CCDS
    for ccd, (header, data) in via["passthrough"].items():
        assert data.dtype == np.uint16 and np.array_equal(data, original[ccd])
        assert header["BITPIX"] == 16 and header["BZERO"] == 32768
        assert header["DWFCODEC"] == "passthrough" and header["DWFZCMP"] == "RICE_1"
        rice_header, rice_data = via["rice"][ccd]
        assert np.array_equal(data, rice_data)
        strip = {"DWFCODEC", "DWFZCMP", "CHECKSUM", "DATASUM"}
        assert [c.image for c in header.cards if c.keyword not in strip] == \
               [c.image for c in rice_header.cards if c.keyword not in strip]


def test_packing_never_decompresses(sim_raw, tmp_path):
    """A CCD whose tiles cannot be decompressed still packs by pass-through; rice, which decodes, fails."""
    spans = scan_hdus(sim_raw)
    _, chosen, _, _ = _gather_ccds(sim_raw, None, None)
    span = spans[next(h.hdu for _, h in chosen if h.ccd == 3)]
    data = bytearray(sim_raw.read_bytes())
    table = span.get("NAXIS1") * span.get("NAXIS2")  # the tile descriptors: (length, heap offset) per row
    data[span.data_start:span.data_start + table] = b"\x7f" * table
    broken = tmp_path / "raw" / sim_raw.name
    broken.parent.mkdir()
    broken.write_bytes(bytes(data))
    with pytest.raises(OSError):
        fitsio.read(str(broken), ext=span.index)  # really undecodable
    with pytest.raises(FitsFormatError, match="cannot read CCD 3"):
        pack_exposure(broken, tmp_path / "rice", codec="rice", parts=1, jobs=1)
    parts = pack_exposure(broken, tmp_path / "pt", parts=1, jobs=1)
    assert parts[0].codec == "passthrough"
    m = read_manifest(parts[0].manifest)
    assert sorted(m.ccds) == CCDS


def test_info_from_the_headers_read_once_is_exposure_info(sim_raw):
    assert _gather_ccds(sim_raw, None, None)[3] == exposure_info(sim_raw)


# --------------------------------------------------------------------------- damage
def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_tile_damaged_in_the_raw_is_an_integrity_failure_on_the_node(fz_raw, tmp_path):
    """A byte of a tile flipped in the fpack'd raw: packing copies it (and hashes the damage); the node refuses it."""
    raw = tmp_path / "raw" / fz_raw.name
    raw.parent.mkdir()
    shutil.copy(fz_raw, raw)
    _, chosen, _, _ = _gather_ccds(raw, None, None)
    span = scan_hdus(raw)[next(h.hdu for _, h in chosen if h.ccd == 2)]
    _flip(raw, span.data_start + span.data_bytes // 2)  # inside the heap: one tile's bytes
    parts = pack_exposure(raw, tmp_path / "out", parts=1, jobs=1)
    m = read_manifest(parts[0].manifest)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    staged = stage_ccd(parts[0].tar, m, 1, scratch)  # a good CCD of the same part is fine
    assert staged.raw.is_file()
    with pytest.raises(IntegrityError, match=r"DECam_00004242_02\.fits\.fz.*RICE_1 tile data damaged: DATASUM"):
        stage_ccd(parts[0].tar, m, 2, scratch)
    with pytest.raises(IntegrityError, match="tile data damaged"):
        unpack_part(parts[0].tar, tmp_path / "ccds")
    assert not (tmp_path / "ccds").exists()


def test_member_damaged_before_hashing_is_caught_without_raw_checksums(sim_raw, tmp_path):
    """No DATASUM in the raw: the packer's own DWFDSUM (summed from the bytes it copied) catches later damage."""
    _, chosen, _, _ = _gather_ccds(sim_raw, None, None)
    f, h = chosen[0]
    span = scan_hdus(f)[h.hdu]
    assert span.get("DATASUM") is None
    member = tmp_path / "m.fits.fz"
    copy_member(f, span, member)
    header = h.header
    ok = decompress_member(member, tmp_path / "ok.fits", codec="passthrough", header=header)
    assert np.array_equal(fits.getdata(ok), _pixels(sim_raw)[h.ccd])
    member_span = scan_hdus(member)[1]
    _flip(member, member_span.data_start + 100)
    with pytest.raises(IntegrityError, match=r"m\.fits\.fz: RICE_1 tile data damaged: DWFDSUM"):
        decompress_member(member, tmp_path / "bad.fits", codec="passthrough", header=header)
    assert not (tmp_path / "bad.fits").exists()


def test_damaged_header_fails_its_checksum(fz_raw, tmp_path):
    _, chosen, _, _ = _gather_ccds(fz_raw, None, None)
    f, h = chosen[0]
    member = tmp_path / "m.fits.fz"
    copy_member(f, scan_hdus(f)[h.hdu], member)
    text = member.read_bytes()
    at = text.index(b"DETPOS") + 12  # inside the value of a header card of HDU 1
    _flip(member, at)
    with pytest.raises(IntegrityError, match="fails its CHECKSUM"):
        verify_member(member)


def test_truncated_or_padded_member_is_refused(fz_raw, tmp_path):
    _, chosen, _, _ = _gather_ccds(fz_raw, None, None)
    f, h = chosen[0]
    member = tmp_path / "m.fits.fz"
    copy_member(f, scan_hdus(f)[h.hdu], member)
    data = member.read_bytes()
    member.write_bytes(data[:-2880])
    with pytest.raises(IntegrityError, match="not a whole FITS file"):
        verify_member(member)
    member.write_bytes(data + b"\0" * 2880)
    with pytest.raises(IntegrityError, match="not a whole FITS file"):
        verify_member(member)
    member.write_bytes(data + data[2880:])  # HDU 1 appended again (the member's primary is one block)
    with pytest.raises(IntegrityError, match="3 HDU\\(s\\), not a primary \\+ one compressed HDU"):
        verify_member(member)


# --------------------------------------------------------------------------- HSC
@pytest.fixture(scope="module")
def hsc_files(tmp_path_factory) -> list[Path]:
    """One HSC visit's per-CCD files on the real HSC header, uncompressed as the simulator writes them."""
    return simulate_hsc_visit(tmp_path_factory.mktemp("hsc"), visit=9046, ccds=HSC_CCDS, seed=3)


def test_fpacked_hsc_visit_passes_through(hsc_files, tmp_path):
    fz = [_fpack(f, tmp_path / "fz" / f"{f.name}.fz") for f in hsc_files]
    parts = pack_exposure(fz, tmp_path / "out", parts=2, jobs=1)
    assert {p.codec for p in parts} == {"passthrough"}
    files = []
    for p in parts:
        m = read_manifest(p.manifest)
        assert all(x.shape == [4241, 2144] and x.dtype == "uint16" for x in m.members)
        files += unpack_part(p.tar, tmp_path / "ccds")
    restored = _restored(files)
    assert sorted(restored) == HSC_CCDS
    for f in hsc_files:
        header = fits.getheader(f)
        data = fitsio.read(str(f)).astype(np.uint16)
        got_header, got = restored[header["DET-ID"]]
        assert np.array_equal(got, data)
        for key in ("EXP-ID", "DET-ID", "DATE-OBS", "T_OSMN11", "T_EFMN11", "FILTER01"):
            assert got_header[key] == header[key], key


def test_uncompressed_raw_falls_back_to_rice_and_refuses_explicit_passthrough(hsc_files, tmp_path):
    parts = pack_exposure(hsc_files, tmp_path / "auto", parts=1, jobs=1)
    assert parts[0].codec == "rice" and read_manifest(parts[0].manifest).codec == "rice"
    with pytest.raises(DwfError, match=r"HSCA009046[0-9]+\.fits: codec passthrough: CCD 4[12] \(HDU 0\) not a tile"):
        pack_exposure(hsc_files, tmp_path / "pt", codec="passthrough", parts=1, jobs=1)


# --------------------------------------------------------------------------- eligibility
def _one_hdu(path: Path, data: np.ndarray, **kw):
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(data, **kw)
    return scan_hdus(path)[1]


def test_only_lossless_integer_tiles_qualify(tmp_path):
    rng = np.random.default_rng(1)
    ints = rng.integers(900, 1100, (64, 80)).astype(np.uint16)
    assert not_passthrough(_one_hdu(tmp_path / "r.fits", ints, compress="RICE", tile_dims=[1, 80])) is None
    assert not_passthrough(_one_hdu(tmp_path / "g.fits", ints, compress="GZIP", tile_dims=[1, 80])) is None
    assert not_passthrough(_one_hdu(tmp_path / "h0.fits", ints, compress="HCOMPRESS", tile_dims=[16, 80])) is None
    lossy_h = _one_hdu(tmp_path / "h.fits", ints, compress="HCOMPRESS", tile_dims=[16, 80], hcomp_scale=2.5)
    assert "lossy" in not_passthrough(lossy_h)
    floats = _one_hdu(tmp_path / "q.fits", ints.astype(np.float32), compress="RICE", tile_dims=[1, 80], qlevel=4)
    assert "ZBITPIX -32" in not_passthrough(floats)
    signed = _one_hdu(tmp_path / "s.fits", ints.astype(np.int16), compress="RICE", tile_dims=[1, 80])
    assert "BZERO" in not_passthrough(signed)
    with fitsio.FITS(str(tmp_path / "plain.fits"), "rw", clobber=True) as f:
        f.write(ints)
    assert "not a tile-compressed image" in not_passthrough(scan_hdus(tmp_path / "plain.fits")[0])


def test_passthrough_codec_from_pixels_and_its_name(tmp_path):
    assert "passthrough" in CODEC_NAMES and AUTO not in CODEC_NAMES
    with pytest.raises(DwfError, match="unknown codec 'auto'"):
        get_codec(AUTO)
    data = np.random.default_rng(2).integers(0, 65535, (50, 70)).astype(np.uint16)
    header = fits.Header([("CCDNUM", 5), ("EXTNAME", "S1")])
    member = tmp_path / "m.fits.fz"
    get_codec("passthrough").compress(header, data, member)
    hdu = verify_member(member)
    assert hdu.get("DATASUM") is not None and data_sum(member.read_bytes()[hdu.data_start:hdu.end]) == int(
        hdu.get("DATASUM"))
    out = decompress_member(member, tmp_path / "o.fits", codec="passthrough", header=header)
    assert np.array_equal(fits.getdata(out), data) and fits.getheader(out)["CCDNUM"] == 5


# --------------------------------------------------------------------------- push
def test_push_with_auto_sends_passthrough_parts_and_journals_the_codec(sim_raw, tmp_path):
    """The telescope side end to end (local rsync transport): ``auto`` resolves per exposure, the journal says which."""
    import sqlite3

    from dwfhpc.config import load_site
    from dwfhpc.push import Push, PushOptions

    if not shutil.which("rsync"):
        missing("rsync not installed")
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    shutil.copy(sim_raw, raw_dir / sim_raw.name)
    site = load_site("local", workdir=tmp_path, overrides={
        "push": {"raw_dir": str(raw_dir), "stable_seconds": 0, "poll_seconds": 0.2, "incomplete_timeout": 3, "jobs": 1},
        "transport": {"staging": str(tmp_path / "cluster" / "staging"), "inbox": str(tmp_path / "cluster" / "inbox")}})
    Push(site, PushOptions(streams=1, mode="parallel", nbundle=4, exp_min=0, codec=AUTO, parts=2, once=True,
                           quiet=True, live=False)).run()
    inbox = site.path(site.transport.inbox)
    manifests = sorted(inbox.glob("*.manifest.json"))
    assert len(manifests) == 2
    pixels = _pixels(sim_raw)
    for path in manifests:
        m = read_manifest(path)
        assert m.codec == "passthrough"
        files = unpack_part(inbox / m.tar_name, tmp_path / "ccds")
        for f in files:
            ccd = fits.getheader(f)["CCDNUM"]
            assert np.array_equal(fits.getdata(f), pixels[ccd])
    with sqlite3.connect(site.path(site.push.journal)) as db:
        assert db.execute("SELECT codec, state FROM exposures").fetchall() == [("passthrough", "delivered")]
