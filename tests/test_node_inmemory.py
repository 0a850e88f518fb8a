"""In-memory staging (issue 24): the embedded calibrator takes the decompressed CCD straight from staging.

Real simulated DECam exposures packed into real parts with each codec; the same member is staged both
ways (raw FITS in scratch, and in memory) and calibrated: the four products must be the same bytes.
Calibration frames and the image backends (photpipe, hscpipe, the dwfhpc image) still get the file.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from dwfhpc.calibrate import calibrate_file
from dwfhpc.calibrate.rawio import read_pixels
from dwfhpc.config import load_site
from dwfhpc.node import TaskSpec, run_task
from dwfhpc.node.run import stage_in_memory
from dwfhpc.node.stage import stage_ccd
from dwfhpc.node.tuning import tune_malloc
from dwfhpc.parts import pack_exposure, read_manifest
from dwfhpc.simulate import simulate_decam_exposure

CCD = 25


@pytest.fixture(scope="module")
def science(tmp_path_factory) -> tuple[Path, Path]:
    """(folder, raw exposure): one science CCD with a WCS offset to repair, and its reference catalog."""
    root = tmp_path_factory.mktemp("inmem")
    raw = simulate_decam_exposure(root / "raw", expnum=3, obstype="object", ccds=[CCD], seed=3, jobs=1,
                                  wcs_offset_arcsec=(4.0, -3.0), catalog_out=root / "refcat.fits")
    return root, raw


def _part(root: Path, raw: Path, codec: str):
    return pack_exposure(raw, root / f"parts-{codec}", codec=codec, parts=1, jobs=1)[0]


@pytest.mark.parametrize("codec", ["passthrough", "rice", "none", "jp2"])
def test_in_memory_products_are_byte_identical_to_the_file_path(science, tmp_path, codec):
    root, raw = science
    part = _part(root, raw, codec)
    m = read_manifest(part.manifest)
    on_disk = stage_ccd(part.tar, m, CCD, tmp_path / "a")
    in_mem = stage_ccd(part.tar, m, CCD, tmp_path / "b", in_memory=True)
    assert on_disk.raw.is_file() and on_disk.in_memory is None
    assert in_mem.raw is None and not any((tmp_path / "b").rglob("*.fits"))  # no raw file in scratch
    assert set(in_mem.timings) == set(on_disk.timings) == {"stage", "verify", "decompress"}

    # the header and pixels handed over are those the calibrator reads back from the file
    header, pixels = in_mem.in_memory
    file_header = fits.getheader(on_disk.raw, 0)
    assert header.tostring() == file_header.tostring()
    assert pixels.dtype == np.uint16 and pixels.flags.c_contiguous
    assert np.array_equal(pixels, read_pixels(on_disk.raw, 0))

    kw = dict(refcat=root / "refcat.fits", ccd=CCD, prior_shift=None)
    a = calibrate_file(on_disk.raw, tmp_path / "out-a", **kw)
    b = calibrate_file(in_mem.source, tmp_path / "out-b", pixels=in_mem.in_memory, **kw)
    assert a.qa == b.qa and a.wcs == b.wcs
    assert a.wcs["status"] == "ok"
    assert set(a.products) == set(b.products) == {"cal", "mask", "cat", "qa"}
    for key in a.products:
        assert a.products[key].name == b.products[key].name
        assert a.products[key].read_bytes() == b.products[key].read_bytes(), key
    with fits.open(b.products["cal"]) as hb, fits.open(a.products["cal"]) as ha:
        assert np.array_equal(ha[1].data, hb[1].data)
        assert ha[1].header.tostring() == hb[1].header.tostring()
    with fits.open(b.products["mask"]) as hb, fits.open(a.products["mask"]) as ha:
        assert np.array_equal(ha[1].data, hb[1].data)


def test_a_damaged_passthrough_member_still_fails_in_memory(science, tmp_path):
    """Verification is unchanged: a member whose bytes differ from the manifest is refused before decoding."""
    from dwfhpc.errors import IntegrityError

    root, raw = science
    part = _part(root, raw, "passthrough")
    m = read_manifest(part.manifest)
    bad = tmp_path / part.tar.name
    data = bytearray(part.tar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256|does not match"):
        stage_ccd(bad, m, CCD, tmp_path / "s", in_memory=True)


def test_only_the_embedded_calibrator_in_process_stages_in_memory(science, tmp_path):
    """photpipe, hscpipe, ``container: true`` and calibration frames get the raw FITS file in scratch."""
    root, raw = science
    site = load_site("local", workdir=tmp_path)
    part = _part(root, raw, "passthrough")
    m = read_manifest(part.manifest)
    base = TaskSpec.from_site(site, part.manifest, part.tar)
    assert stage_in_memory(base)
    cases = {"photpipe": dict(backend="photpipe"), "hscpipe": dict(backend="hscpipe"),
             "container": dict(container=True), "bias": dict(kind="bias")}
    for name, change in cases.items():
        spec = TaskSpec(**{**base.__dict__, **change})
        assert not stage_in_memory(spec), name
        staged = stage_ccd(part.tar, m, CCD, tmp_path / name, in_memory=stage_in_memory(spec))
        assert staged.raw is not None and staged.raw.is_file() and staged.source == staged.raw, name
        assert staged.pixels is None and staged.in_memory is None


def _science_spec(science, tmp_path, **overrides) -> Path:
    root, raw = science
    site = load_site("local", workdir=tmp_path / "site")
    part = _part(root, raw, "passthrough")
    spec = TaskSpec.from_site(site, part.manifest, part.tar, products=str(tmp_path / "products"),
                              scratch_vars=[], scratch_fallback=str(tmp_path / "scratch"), min_free_gb=0.01,
                              require_masters=False, refcat=str(root / "refcat.fits"), **overrides)
    (tmp_path / "scratch").mkdir(parents=True, exist_ok=True)
    return spec.write(tmp_path / "spec.json")


def test_node_task_in_memory_writes_the_products_and_no_raw_file(science, tmp_path):
    result = run_task(_science_spec(science, tmp_path), 0)
    assert result["status"] == "ok", result["error"]
    assert set(result["products"]) == {"cal", "mask", "cat", "qa"}
    assert result["wcs"]["status"] == "ok"
    assert set(result["timings"]) >= {"stage", "verify", "decompress", "calibrate", "qa", "copyback"}
    assert not any((tmp_path / "scratch").iterdir())


def test_sigterm_while_calibrating_in_memory_cleans_scratch_and_leaves_no_products(science, tmp_path):
    """No raw file marks the staged CCD any more: the products folder in scratch shows calibration under way."""
    spec_path = _science_spec(science, tmp_path)
    scratch = tmp_path / "scratch"
    proc = subprocess.Popen([sys.executable, "-m", "dwfhpc.cli", "node", "run", str(spec_path), "--index", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(scratch.glob("*/out")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert not list(scratch.glob("*/*.fits"))  # the CCD was staged in memory
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    summary = json.loads(out)
    assert proc.returncode == 1 and summary["status"] == "failed" and summary["interrupted"] == "SIGTERM"
    assert not any(scratch.iterdir())
    assert not (tmp_path / "products").exists() or not any(p.is_file() for p in (tmp_path / "products").rglob("*"))


def test_malloc_tuning_is_idempotent():
    first = tune_malloc()
    assert tune_malloc() is first
