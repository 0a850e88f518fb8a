"""The node task on real parts: staging through scratch, products only, failures that leave nothing behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from astropy.io import fits

from dwfhpc.calibrate import build_master
from dwfhpc.config import load_site
from dwfhpc.layout import library_path, master_path, product_paths
from dwfhpc.node import TaskSpec, result_path, run_task
from dwfhpc.parts import pack_exposure, unpack_part
from dwfhpc.simulate import simulate_decam_exposure

CCDS = [25, 32]
NIGHT = "2026-11-24"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A site under a temporary workdir with masters built from simulated bias and flat frames."""
    root = tmp_path_factory.mktemp("node")
    site = load_site("local", workdir=root)
    masters = site.path(site.calibration.masters)
    exposures = {}
    for expnum, obstype in ((1, "zero"), (2, "dome flat"), (3, "object")):
        raw = simulate_decam_exposure(root / "raw", expnum=expnum, obstype=obstype, ccds=CCDS, seed=expnum)
        exposures[obstype] = pack_exposure(raw, root / "parts", codec="rice", parts=1, jobs=1)[0]
    for ccd in CCDS:
        unpacked = {k: unpack_part(p.tar, root / "ccd" / k) for k, p in exposures.items() if k != "object"}
        bias = build_master("bias", [f for f in unpacked["zero"] if f.name.endswith(f"_{ccd}.fits")],
                            master_path(masters, NIGHT, "bias", ccd))
        build_master("flat", [f for f in unpacked["dome flat"] if f.name.endswith(f"_{ccd}.fits")],
                     master_path(masters, NIGHT, "flat", ccd, "g"), bias=bias)
    return root, site, exposures


def _spec(world, kind="object", **overrides) -> Path:
    root, site, exposures = world
    part = exposures[kind]
    spec = TaskSpec.from_site(site, part.manifest, part.tar, scratch_vars=["DWF_TEST_SCRATCH"],
                              scratch_fallback=str(root / "scratch"), **overrides)
    path = site.path(site.ingest.specs) / f"{part.tar.stem}-{len(list(root.rglob('*.json')))}.json"
    spec.write(path)
    return path


def test_science_task_writes_only_products_and_cleans_scratch(world):
    root, site, _ = world
    spec_path = _spec(world)
    result = run_task(spec_path, 1)
    assert result["status"] == "ok", result["error"]
    assert result["ccd"] == 32
    targets = product_paths(site.path(site.calibration.products), NIGHT, "DECam_00000003", 32)
    assert sorted(Path(p) for p in result["products"].values()) == sorted(targets.values())
    assert sorted(targets["cal"].parent.iterdir()) == sorted(targets.values())  # nothing else on the shared FS
    assert result["bytes_written"] == sum(p.stat().st_size for p in targets.values())
    assert set(result["timings"]) >= {"stage", "decompress", "calibrate", "qa", "copyback"}
    assert not any((root / "scratch").iterdir())
    assert json.loads(result_path(spec_path, 1).read_text())["status"] == "ok"
    assert fits.getheader(targets["cal"], 1)["DWFBIAS"] == "bias_32.fits"


def test_bias_task_files_the_frame_in_the_library(world):
    root, site, _ = world
    result = run_task(_spec(world, "zero"), 0)
    assert result["status"] == "ok"
    filed = library_path(site.path(site.calibration.library), NIGHT, 25, "bias", "", "DECam_00000001")
    assert result["products"] == {"raw": str(filed)} and fits.getheader(filed)["OBSTYPE"] == "zero"


def test_corrupt_member_fails_cleanly(world, tmp_path):
    root, site, exposures = world
    part = exposures["object"]
    bad_tar = tmp_path / part.tar.name
    data = bytearray(part.tar.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the first member's bytes
    bad_tar.write_bytes(bytes(data))
    spec = TaskSpec.read(_spec(world))
    spec.part_tar = str(bad_tar)
    spec.products = str(tmp_path / "products")
    spec_path = spec.write(tmp_path / "bad.json")
    result = run_task(spec_path, 0)
    assert result["status"] == "failed" and "sha256" in result["error"] and "DECam_00000003_25" in result["error"]
    assert not (tmp_path / "products").exists()
    assert not any((root / "scratch").iterdir())


def test_missing_master_is_a_failed_result_with_the_reason(world, tmp_path):
    spec = TaskSpec.read(_spec(world))
    spec.masters = str(tmp_path / "no-masters")
    spec.products = str(tmp_path / "products")
    result = run_task(spec.write(tmp_path / "s.json"), 0)
    assert result["status"] == "failed" and "no master bias for night 2026-11-24 CCD 25" in result["error"]
    assert not (tmp_path / "products").exists()


def test_full_scratch_is_refused_before_work(world, tmp_path):
    """A real 2 MB tmpfs as the node's scratch: the task refuses to start and says how much it needs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        spec = TaskSpec.read(_spec(world))
        spec.scratch_fallback = str(small)
        spec.min_free_gb = 0
        spec.products = str(tmp_path / "products")
        result = run_task(spec.write(tmp_path / "s.json"), 0)
        assert result["status"] == "failed" and "scratch has" in result["error"] and str(small) in result["error"]
        assert not any(small.iterdir()) and not (tmp_path / "products").exists()
    finally:
        subprocess.run(["umount", str(small)])


def test_sigterm_cleans_scratch_and_leaves_no_partial_products(world, tmp_path):
    root, site, _ = world
    spec = TaskSpec.read(_spec(world))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    spec.scratch_fallback = str(scratch)
    spec.products = str(tmp_path / "products")
    spec_path = spec.write(tmp_path / "s.json")
    proc = subprocess.Popen([sys.executable, "-m", "dwfhpc.cli", "node", "run", str(spec_path), "--index", "0"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "DWF_TEST_SCRATCH": ""})
    deadline = time.monotonic() + 60
    while not any(scratch.iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "interrupted by SIGTERM" in out
    assert not any(scratch.iterdir())
    products = tmp_path / "products"
    assert not products.exists() or not [p for p in products.rglob("*") if p.is_file()]


def test_index_from_the_array_environment(world, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    result = run_task(_spec(world))
    assert result["index"] == 1 and result["ccd"] == 32 and result["status"] == "ok"
