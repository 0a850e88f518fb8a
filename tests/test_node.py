"""The node task on real parts: staging through scratch, products only, failures that leave nothing behind.

Everything is real: simulated DECam exposures packed into real part tarballs, calibration frames
filed by bias/flat node tasks, masters built from them, a real tmpfs as a full scratch (when
this runs as root), a real SIGTERM to a real ``dwfhpc node run`` process.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from astropy.io import fits

from dwfhpc.calibrate import build_night_masters
from dwfhpc.config import load_site
from dwfhpc.errors import DwfError
from dwfhpc.layout import library_path, product_paths
from dwfhpc.node import TaskSpec, copy_back, result_path, run_task, task_index
from dwfhpc.parts import pack_exposure
from dwfhpc.simulate import simulate_decam_exposure

CCDS = [25, 32]
NIGHT = "2026-11-24"
SCIENCE = "DECam_00000003"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A local site under a temporary workdir: bias + flat filed by node tasks, masters built, a science part."""
    root = tmp_path_factory.mktemp("node")
    (root / "scratch").mkdir()
    site = load_site("local", workdir=root, overrides={"node": {"scratch_vars": ["DWF_TEST_SCRATCH"],
                                                                 "scratch_fallback": str(root / "scratch"),
                                                                 "min_free_gb": 0.01}})
    parts = {}
    for expnum, obstype in ((1, "zero"), (2, "dome flat"), (3, "object")):
        raw = simulate_decam_exposure(root / "raw", expnum=expnum, obstype=obstype, ccds=CCDS, seed=expnum, jobs=1)
        parts[obstype] = pack_exposure(raw, root / "parts", codec="rice", parts=1, jobs=1)[0]
    for obstype in ("zero", "dome flat"):
        spec = _spec(site, parts[obstype], f"cal-{obstype.replace(' ', '-')}")
        for i in range(len(CCDS)):
            assert run_task(spec, i)["status"] == "ok"
    build_night_masters(site.path(site.calibration.library), site.path(site.calibration.masters), NIGHT,
                        progress=lambda line: None)
    return root, site, parts


def _spec(site, part, name: str, **overrides) -> Path:
    spec = TaskSpec.from_site(site, part.manifest, overrides.pop("part_tar", part.tar), **overrides)
    return spec.write(site.path(site.ingest.specs) / f"{name}.json")


def _science(world, tmp_path, **overrides) -> Path:
    """A science spec whose products go to a fresh folder of this test."""
    root, site, parts = world
    return _spec(site, parts["object"], f"sci-{tmp_path.name}", products=str(tmp_path / "products"), **overrides)


def test_science_task_writes_only_the_four_products_and_cleans_scratch(world, tmp_path):
    root, site, _ = world
    spec_path = _science(world, tmp_path)
    result = run_task(spec_path, 1, write=True)
    assert result["status"] == "ok", result["error"]
    assert (result["ccd"], result["expid"], result["night"], result["kind"]) == (32, SCIENCE, NIGHT, "science")
    targets = product_paths(tmp_path / "products", NIGHT, SCIENCE, 32)
    assert result["products"] == {k: str(v) for k, v in targets.items()}
    assert _files(tmp_path / "products") == sorted(targets.values())  # nothing else reached the shared FS
    assert result["bytes_written"] == sum(p.stat().st_size for p in targets.values())
    assert set(result["timings"]) >= {"stage", "verify", "decompress", "calibrate", "qa", "copyback"}
    assert result["qa"]["n_sources"] > 0 and result["wcs"]["status"] == "skipped"
    assert not any((root / "scratch").iterdir()) and not Path(result["scratch"]).exists()
    assert json.loads(result_path(spec_path, 1).read_text())["status"] == "ok"
    assert fits.getheader(targets["cal"], 1)["DWFBIAS"] == "bias_32.fits"
    assert fits.getheader(targets["cal"], 1)["DWFFLAT"] == "flat_g_32.fits"


def test_calibration_frames_were_filed_in_the_library(world):
    """The bias/flat node tasks of the fixture: raw CCD FITS filed by night / CCD (/ filter), status ok."""
    root, site, parts = world
    library = site.path(site.calibration.library)
    bias = library_path(library, NIGHT, 25, "bias", "", "DECam_00000001")
    flat = library_path(library, NIGHT, 32, "flat", "g", "DECam_00000002")
    assert fits.getheader(bias)["OBSTYPE"] == "zero" and fits.getheader(flat)["OBSTYPE"] == "dome flat"
    assert fits.getdata(bias).shape == (4146, 2160)
    result = run_task(_spec(site, parts["zero"], "bias-again"), 0)  # filed again: replaced, not duplicated
    assert result["status"] == "ok" and result["products"] == {"raw": str(bias)}
    assert result["bytes_written"] == bias.stat().st_size
    assert len(list(bias.parent.iterdir())) == 1


def test_corrupt_member_fails_naming_it_and_leaves_nothing(world, tmp_path):
    root, site, parts = world
    part = parts["object"]
    bad_tar = tmp_path / part.tar.name
    data = bytearray(part.tar.read_bytes())
    data[len(data) // 4] ^= 0xFF  # inside the first member's bytes (CCD 25)
    bad_tar.write_bytes(bytes(data))
    result = run_task(_science(world, tmp_path, part_tar=str(bad_tar)), 0)
    assert result["status"] == "failed"
    assert "DECam_00000003_25.fits.fz" in result["error"] and "sha256" in result["error"]
    assert _files(tmp_path / "products") == []
    assert not any((root / "scratch").iterdir())


def test_missing_master_is_a_failed_result_with_the_reason(world, tmp_path):
    result = run_task(_science(world, tmp_path, masters=str(tmp_path / "no-masters")), 0)
    assert result["status"] == "failed"
    assert f"no master bias for night {NIGHT} CCD 25" in result["error"]
    assert _files(tmp_path / "products") == []


def test_without_required_masters_the_ccd_is_overscan_corrected_only(world, tmp_path):
    result = run_task(_science(world, tmp_path, masters=str(tmp_path / "no-masters"), require_masters=False), 0)
    assert result["status"] == "ok", result["error"]
    assert fits.getheader(result["products"]["cal"], 1)["DWFBIAS"] == "none"


def test_scratch_below_the_threshold_is_refused_naming_folder_and_shortfall(world, tmp_path):
    """Works unprivileged: a scratch variable pointing at a folder and a min_free_gb larger than the disk."""
    scratch = tmp_path / "jobfs"
    scratch.mkdir()
    spec = _science(world, tmp_path, scratch_vars=["DWF_TEST_JOBFS"], min_free_gb=1e6)
    os.environ["DWF_TEST_JOBFS"] = str(scratch)
    try:
        result = run_task(spec, 0)
    finally:
        del os.environ["DWF_TEST_JOBFS"]
    assert result["status"] == "failed"
    assert result["error"].startswith(f"{scratch}: scratch has") and "short by" in result["error"]
    assert not any(scratch.iterdir()) and _files(tmp_path / "products") == []


def test_full_scratch_on_a_real_small_tmpfs(world, tmp_path):
    """A real 2 MB tmpfs as the node's scratch (mounted as root): refused before any work, clear error."""
    small = tmp_path / "small"
    small.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the threshold test covers the check")
    try:
        result = run_task(_science(world, tmp_path, scratch_vars=[], scratch_fallback=str(small), min_free_gb=0), 0)
        assert result["status"] == "failed"
        assert str(small) in result["error"] and "MB free" in result["error"] and "short by" in result["error"]
        assert not any(small.iterdir()) and _files(tmp_path / "products") == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_sigterm_during_a_task_cleans_scratch_and_leaves_no_partial_products(world, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    spec_path = _science(world, tmp_path, scratch_vars=[], scratch_fallback=str(scratch))
    proc = subprocess.Popen([sys.executable, "-m", "dwfhpc.cli", "node", "run", str(spec_path), "--index", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(scratch.glob("*/out")):  # the CCD is staged (in memory) and calibration is under way
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    summary = json.loads(out)
    assert proc.returncode == 1 and summary["status"] == "failed" and summary["interrupted"] == "SIGTERM"
    assert "interrupted by SIGTERM" in err
    assert not any(scratch.iterdir())
    assert _files(tmp_path / "products") == []
    assert json.loads(result_path(spec_path, 0).read_text())["interrupted"] == "SIGTERM"


def test_index_from_the_array_environment(world, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    result = run_task(_science(world, tmp_path))
    assert result["index"] == 1 and result["ccd"] == 32 and result["status"] == "ok"
    assert task_index(None, {"PBS_ARRAY_INDEX": "3"}) == 3 and task_index(None, {"PBS_ARRAYID": "4"}) == 4
    assert task_index(2, {"SLURM_ARRAY_TASK_ID": "7"}) == 2
    with pytest.raises(DwfError, match="no task index"):
        task_index(None, {})


def test_out_of_range_index_and_bad_spec_are_failed_results(world, tmp_path):
    assert "out of range" in run_task(_science(world, tmp_path), 5)["error"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "dwfhpc.task/1", "expid": "x", "bogus": 1}))
    result = run_task(bad, 0)
    assert result["status"] == "failed" and "unknown task spec key(s): bogus" in result["error"]
    assert result["error_kind"] == "integrity"  # the same file fails the same way: not worth a retry
    missing = run_task(tmp_path / "not-yet-there.json", 0)
    assert "missing" in missing["error"] and missing["error_kind"] == "other"  # may still be on its way


def test_spec_from_site_is_absolute_and_round_trips(world):
    root, site, parts = world
    spec = TaskSpec.from_site(site, parts["object"].manifest, parts["object"].tar, prior_shifts={25: (1.5, -2.0)})
    assert spec.ccds == CCDS and spec.kind == "science" and spec.expnum == 3 and spec.filter == "g"
    assert spec.products == str(root / "cluster" / "products") and Path(spec.part_tar).is_absolute()
    assert spec.prior_shift(25) == (1.5, -2.0) and spec.prior_shift(32) is None
    again = TaskSpec.read(spec.write(root / "roundtrip.json"))
    assert again == spec


def test_copy_back_failure_leaves_no_product_and_no_temporary_file(tmp_path):
    src = tmp_path / "out"
    src.mkdir()
    (src / "a").write_bytes(b"x" * 100)
    targets = {"cal": tmp_path / "p" / "a.cal.fits.fz", "qa": tmp_path / "p" / "a.qa.json"}
    with pytest.raises(DwfError, match="cannot copy products back"):
        copy_back({"cal": src / "a", "qa": src / "missing"}, targets)
    assert _files(tmp_path / "p") == []
    assert copy_back({"cal": src / "a", "qa": src / "a"}, targets) == 200
    assert _files(tmp_path / "p") == sorted(targets.values())
