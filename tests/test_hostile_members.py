"""Hostile deliveries (issue 26): whatever one delivery holds, the damage stays inside it.

Real simulated DECam exposures packed into real parts, then forged the way a broken packer or a
bad night would: a science exposure labelled ``kind: bias`` with a valid checksum, a flat filter
that is not the header's, members whose header declares 30000 x 30000 or 100000 x 100000 pixels
(decompression bombs) or fewer pixels than the CCD, a bias whose sections claim a million pixels
a side (the masters build would allocate terabytes), the same exposure delivered as ``p1of1`` and
again as ``p1of2`` + ``p2of2``, and DECam's dead CCD 61. Each must fail (or be skipped) with a
reason naming the file and the problem, never be retried, and never take the rest of the night down.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from dwfhpc.codecs.rice import RiceCodec
from dwfhpc.config import load_site
from dwfhpc.db import install_event_handler, remove_event_handler
from dwfhpc.ingest.masters import MastersKeeper
from dwfhpc.instruments import DECam
from dwfhpc.layout import library_path, master_path
from dwfhpc.node import TaskSpec, run_task
from dwfhpc.node.calfiling import file_calibration_frame
from dwfhpc.node.result import TaskResult, TaskStatus
from dwfhpc.node.stage import stage_ccd
from dwfhpc.parts import pack_exposure, read_manifest
from dwfhpc.simulate import simulate_decam_exposure
from dwfhpc.statedb import StateDB

NIGHT = "2026-11-24"
BIAS, SCIENCE, BADCCD = "DECam_00000001", "DECam_00000004", "DECam_00000005"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A local site; parts of a bias (CCD 25), a science exposure (CCDs 25, 32) packed as 1 and as 2 parts,
    and a science exposure of CCD 61 packed by a packer that does not know it is dead."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "scratch").mkdir()
    site = load_site("local", workdir=root, overrides={"node": {"scratch_vars": ["DWF_TEST_SCRATCH"],
                                                                 "scratch_fallback": str(root / "scratch"),
                                                                 "min_free_gb": 0.01}})
    raw = root / "raw"
    bias = simulate_decam_exposure(raw, expnum=1, obstype="zero", ccds=[25], seed=1, jobs=1)
    sci = simulate_decam_exposure(raw, expnum=4, obstype="object", ccds=[25, 32], seed=4, jobs=1)
    dead = simulate_decam_exposure(raw, expnum=5, obstype="object", ccds=[61], seed=5, jobs=1)
    old_packer = DECam()
    old_packer.bad_ccds = ()  # a packer configured without bad_ccds: CCD 61 reaches the cluster
    parts = {
        "bias": pack_exposure(bias, root / "p-bias", codec="rice", parts=1, jobs=1)[0],
        "sci": pack_exposure(sci, root / "p-sci1", codec="rice", parts=1, jobs=1)[0],
        "sci2": pack_exposure(sci, root / "p-sci2", codec="rice", parts=2, jobs=1),
        "dead": pack_exposure(dead, root / "p-dead", codec="rice", parts=1, jobs=1, ccds=[61],
                              instrument=old_packer)[0],
    }
    return root, site, parts


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def forge(part, out: Path, *, member=None, member_fields: dict | None = None, **fields) -> tuple[Path, Path]:
    """A copy of ``part`` in ``out`` with its members rewritten by ``member(name, bytes)`` and manifest fields
    changed; every size and checksum is made valid again (the forgery passes the inbox)."""
    out.mkdir(parents=True, exist_ok=True)
    m = json.loads(part.manifest.read_text())
    entries = {mm["name"]: mm for mm in m["members"]}
    tar = out / part.tar.name
    with tarfile.open(part.tar) as src, tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as dst:
        for info in src:
            data = src.extractfile(info).read()
            if member is not None:
                data = member(info.name, data)
            info.size = len(data)
            entries[info.name].update(bytes=len(data), sha256=_sha(data), **(member_fields or {}))
            dst.addfile(info, io.BytesIO(data))
    m.update(fields)
    m.update(tar_bytes=tar.stat().st_size, tar_sha256=_sha(tar.read_bytes()))
    manifest = out / part.manifest.name
    manifest.write_text(json.dumps(m))
    return tar, manifest


def run_forged(site, tar: Path, manifest: Path, name: str, index: int = 0) -> dict:
    # without masters the CCD is calibrated overscan-only: what it holds decides how far it gets
    spec = TaskSpec.from_site(site, manifest, tar, products=str(tar.parent / "products"), require_masters=False)
    return run_task(spec.write(site.path(site.ingest.specs) / f"{name}.json"), index)


def _card(data: bytes, key: str, value: int) -> bytes:
    """Replace the 80-character card ``key`` in a FITS file's bytes (same length, checksum recomputed by forge)."""
    at = data.index(f"{key:<8}= ".encode())
    return data[:at] + fits.Card(key, value).image.encode() + data[at + 80:]


# --------------------------------------------------------------------------- finding 2: the header decides
def test_science_exposure_labelled_bias_fails_integrity_and_is_not_filed(world, tmp_path):
    root, site, parts = world
    tar, manifest = forge(parts["sci"], tmp_path / "forged", kind="bias", obstype="zero")
    result = run_forged(site, tar, manifest, "labelled-bias")
    assert result["status"] == "failed" and result["error_kind"] == "integrity"
    assert "OBSTYPE='object'" in result["error"] and "field kind: 'bias'" in result["error"]
    assert "DECam_00000004_25.fits.fz" in result["error"]
    library = site.path(site.calibration.library)
    assert not library_path(library, NIGHT, 25, "bias", "", SCIENCE).exists()


def test_flat_filter_that_is_not_the_headers_fails_integrity(world, tmp_path):
    root, site, parts = world
    tar, manifest = forge(parts["sci"], tmp_path / "forged", filter="r")
    result = run_forged(site, tar, manifest, "wrong-filter")
    assert result["status"] == "failed" and result["error_kind"] == "integrity"
    assert "FILTER='g' does not match the manifest (field filter: 'r')" in result["error"]


# --------------------------------------------------------------------------- finding 7: decompression bombs
@pytest.mark.parametrize("nx, ny, manifest_agrees, problem", [
    (30000, 30000, True, "exceeds a decam raw CCD (2160 x 4146)"),  # 0.3 MB claiming 30000^2: was calibrated done
    (100000, 100000, False, "exceeds a decam raw CCD (2160 x 4146)"),  # 0.8 MB claiming 100000^2: was "out of memory"
    (2048, 4146, False, "the manifest's shape is 2160 x 4146: does not match the manifest"),
])
def test_member_declaring_another_image_size_fails_before_decompression(world, tmp_path, nx, ny, manifest_agrees,
                                                                       problem):
    root, site, parts = world
    bomb = lambda name, data: _card(_card(data, "ZNAXIS1", nx), "ZNAXIS2", ny)  # noqa: E731
    extra = {"member_fields": {"shape": [ny, nx]}} if manifest_agrees else {}
    tar, manifest = forge(parts["sci"], tmp_path / "forged", member=bomb, **extra)
    t = time.monotonic()
    result = run_forged(site, tar, manifest, f"bomb-{nx}")
    assert result["status"] == "failed" and result["error_kind"] == "integrity", result["error"]
    assert f"{nx} x {ny}" in result["error"] and problem in result["error"]
    assert "DECam_00000004_25.fits.fz" in result["error"]
    assert time.monotonic() - t < 30 and not any((root / "scratch").iterdir())


def test_member_smaller_than_the_ccd_fails_naming_the_section(world, tmp_path):
    root, site, parts = world
    header = read_manifest(parts["sci"].manifest).members[0].fits_header()

    def small(name: str, data: bytes) -> bytes:
        out = tmp_path / f"small-{name}"
        RiceCodec().compress(header, np.zeros((1000, 1000), np.uint16), out)
        return out.read_bytes()

    tar, manifest = forge(parts["sci"], tmp_path / "forged", member=small, member_fields={"shape": [1000, 1000]})
    result = run_forged(site, tar, manifest, "small")
    assert result["status"] == "failed" and result["error_kind"] == "integrity", result["error"]
    assert "lies outside the declared 1000 x 1000 image" in result["error"]
    assert "DECam_00000004_25.fits.fz" in result["error"]


# --------------------------------------------------------------------------- findings 2 and 3: the masters build
def _calibration_night(site, parts, db: StateDB) -> None:
    """The bias part recorded and its task done (what ingest has once the bias CCD is filed)."""
    part = parts["bias"]
    db.add_part(read_manifest(part.manifest), stem=part.tar.name[:-4], tar=str(part.tar),
                manifest_path=str(part.manifest), t_inbox=time.time(), mem_gb=1, time_minutes=5)
    now = time.time()
    db.finish(part.tar.name[:-4], 25, TaskResult(status=TaskStatus.OK, ccd=25, started=now - 1, finished=now))


def _file_frames(site, parts, library: Path, scratch: Path, *, good: bool, science: bool, absurd: bool) -> None:
    """Fill the library's bias folder for CCD 25: the real bias, a science CCD filed as a bias (what a
    mislabelled part used to leave), and a bias whose header claims sections a million pixels a side."""
    m = read_manifest(parts["bias"].manifest)
    raw = stage_ccd(parts["bias"].tar, m, 25, scratch / "b").raw
    if good:
        file_calibration_frame(raw, library, night=NIGHT, ccd=25, kind="bias", filter_="", expid=BIAS)
    if absurd:
        target = library_path(library, NIGHT, 25, "bias", "", "DECam_00000009")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(raw, target)
        with fits.open(target, mode="update") as hdul:
            for key in ("DATASECA", "DATASECB", "CCDSECA", "CCDSECB"):
                hdul[0].header[key] = "[1:1000000,1:1000000]"
    if science:
        s = read_manifest(parts["sci"].manifest)
        sci_raw = stage_ccd(parts["sci"].tar, s, 25, scratch / "s").raw
        file_calibration_frame(sci_raw, library, night=NIGHT, ccd=25, kind="bias", filter_="", expid=SCIENCE)


def _keeper(site, db: StateDB, request) -> MastersKeeper:
    """The ingest's keeper, with the ingest's log -> events handler (as :class:`~dwfhpc.ingest.Ingest` installs it)."""
    handler = install_event_handler(db, "dwfhpc.ingest")
    request.addfinalizer(lambda: remove_event_handler(handler))
    return MastersKeeper(db, site.path(site.calibration.library), site.path(site.calibration.masters))


def test_master_build_leaves_bad_frames_out_and_builds_from_the_rest(world, tmp_path, request):
    root, _, parts = world
    site = load_site("local", workdir=tmp_path)
    library = site.path(site.calibration.library)
    _file_frames(site, parts, library, tmp_path, good=True, science=True, absurd=True)
    with StateDB(tmp_path / "state.sqlite") as db:
        _calibration_night(site, parts, db)
        keeper = _keeper(site, db, request)
        keeper.update()
        keeper.wait(120)
        master = master_path(site.path(site.calibration.masters), NIGHT, "bias", 25)
        assert master.is_file()
        h = fits.getheader(master)
        assert (h["NCOMBINE"], h["NREJECT"]) == (1, 2)
        night = db.rows("SELECT masters, reason FROM nights WHERE night=?", (NIGHT,))[0]
        assert night["masters"] == 1
        assert f"{SCIENCE}_25.fits" in night["reason"] and "science frame" in night["reason"]
        assert "DECam_00000009_25.fits" in night["reason"] and "lies outside" in night["reason"]
        warnings = [e["message"] for e in db.events(level="warning")]
        assert any("left out of the masters" in w and f"{SCIENCE}_25.fits" in w for w in warnings)
        assert keeper.blocked_nights() == set()


def test_masters_that_cannot_be_built_are_recorded_once_and_science_fails_with_the_reason(world, tmp_path, request):
    """Only an absurd bias: before the fix its build allocated a 1e6 x 1e6 image, the thread died unrecorded,
    restarted every poll and the night's science stayed queued (``--drain`` never ended)."""
    root, _, parts = world
    site = load_site("local", workdir=tmp_path)
    _file_frames(site, parts, site.path(site.calibration.library), tmp_path, good=False, science=False, absurd=True)
    with StateDB(tmp_path / "state.sqlite") as db:
        _calibration_night(site, parts, db)
        sci = parts["sci"]
        db.add_part(read_manifest(sci.manifest), stem=sci.tar.name[:-4], tar=str(sci.tar),
                    manifest_path=str(sci.manifest), t_inbox=time.time(), mem_gb=1, time_minutes=5)
        keeper = _keeper(site, db, request)
        assert NIGHT in keeper.blocked_nights()  # science waits for the build
        for _ in range(3):  # several polls: one build, never retried on the same frames
            keeper.update()
            keeper.wait(120)
        night = db.rows("SELECT t_masters, masters, reason FROM nights WHERE night=?", (NIGHT,))
        assert night and night[0]["masters"] == 0
        assert "DECam_00000009_25.fits" in night[0]["reason"] and "lies outside" in night[0]["reason"]
        errors = [e["message"] for e in db.events(level="error") if "masters not built" in e["message"]]
        assert len(errors) == 1
        tasks = db.tasks(expid=SCIENCE)
        assert [t.state for t in tasks] == ["failed", "failed"]
        assert all(t.reason.startswith(f"no masters for night {NIGHT}: ") for t in tasks)
        assert keeper.blocked_nights() == set() and not keeper.busy()  # nothing left for --drain to wait for
        assert db.count_tasks("queued", "submitted", "running") == 0


def test_fallback_hook_lets_science_go_on_when_it_provides_masters(world, tmp_path):
    root, _, parts = world
    site = load_site("local", workdir=tmp_path)
    _file_frames(site, parts, site.path(site.calibration.library), tmp_path, good=False, science=False, absurd=True)
    asked = []
    with StateDB(tmp_path / "state.sqlite") as db:
        _calibration_night(site, parts, db)
        sci = parts["sci"]
        db.add_part(read_manifest(sci.manifest), stem=sci.tar.name[:-4], tar=str(sci.tar),
                    manifest_path=str(sci.manifest), t_inbox=time.time(), mem_gb=1, time_minutes=5)
        keeper = MastersKeeper(db, site.path(site.calibration.library), site.path(site.calibration.masters),
                               fallback=lambda night, why: asked.append((night, why)) or "masters of 2026-11-23")
        keeper.update()
        keeper.wait(120)
        keeper.update()
        assert [n for n, _ in asked] == [NIGHT]
        assert [t.state for t in db.tasks(expid=SCIENCE)] == ["queued", "queued"]
        assert keeper.blocked_nights() == set()


# --------------------------------------------------------------------------- finding 8 and CCD 61: at ingest
def _add(db: StateDB, part) -> list[int]:
    return db.add_part(read_manifest(part.manifest), stem=part.tar.name[:-4], tar=str(part.tar),
                       manifest_path=str(part.manifest), t_inbox=time.time(), mem_gb=1, time_minutes=5)


def test_same_exposure_under_another_part_count_is_not_calibrated_twice(world, tmp_path):
    root, site, parts = world
    with StateDB(tmp_path / "state.sqlite") as db:
        assert _add(db, parts["sci"]) == [25, 32]  # p1of1
        db.finish(f"{SCIENCE}.p1of1", 25, TaskResult(status=TaskStatus.OK, ccd=25, started=1.0, finished=2.0))
        for p in parts["sci2"]:  # p1of2 + p2of2: the same CCDs again
            assert _add(db, p) == []
        assert len(db.tasks(expid=SCIENCE)) == 2 and {t.part for t in db.tasks()} == {f"{SCIENCE}.p1of1"}
        skipped = {(s["part"], s["ccd"]): s for s in db.skipped()}
        assert set(skipped) == {(f"{SCIENCE}.p1of2", 25), (f"{SCIENCE}.p2of2", 32)}
        assert skipped[(f"{SCIENCE}.p1of2", 25)]["other_part"] == f"{SCIENCE}.p1of1"
        assert "duplicate delivery" in skipped[(f"{SCIENCE}.p1of2", 25)]["reason"]
        assert "already done" in skipped[(f"{SCIENCE}.p1of2", 25)]["reason"]
        assert "already queued" in skipped[(f"{SCIENCE}.p2of2", 32)]["reason"]
        assert {p.stem: p.state for p in db.parts()}[f"{SCIENCE}.p2of2"] == "done"
        events = [e["message"] for e in db.events()]
        assert any(m.startswith(f"{SCIENCE}.p1of2: duplicate delivery: CCD 25") for m in events)
        assert db.counts("tasks") == {"done": 1, "queued": 1}


def test_a_failed_ccd_may_come_again_in_another_part(world, tmp_path):
    root, site, parts = world
    with StateDB(tmp_path / "state.sqlite") as db:
        _add(db, parts["sci"])
        db.fail(f"{SCIENCE}.p1of1", 25, "member corrupt")
        assert _add(db, parts["sci2"][0]) == [25]  # a new copy of a failed CCD runs


def test_known_bad_ccd_61_is_skipped_at_ingest_with_its_reason(world, tmp_path, capsys):
    from dwfhpc.cli import main

    root, _, parts = world
    site = load_site("local", workdir=tmp_path)
    assert read_manifest(parts["dead"].manifest).ccds == [61]
    with StateDB(site.path(site.ingest.state_db)) as db:
        assert _add(db, parts["dead"]) == []
        assert db.tasks() == []
        (s,) = db.skipped()
        assert (s["part"], s["ccd"]) == (f"{BADCCD}.p1of1", 61) and "known-bad decam CCD" in s["reason"]
        assert "bad_ccds" in s["reason"] and "never processed" in s["reason"]
        assert db.part(f"{BADCCD}.p1of1").state == "done"
        assert db.refresh_part_state(f"{BADCCD}.p1of1") == "done"
    assert main(["status", "--workdir", str(tmp_path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["failures"] == [] and "failed" not in status["tasks"]
