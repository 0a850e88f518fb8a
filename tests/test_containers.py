"""The dwfhpc base image, built for real with Apptainer: calibration inside equals the host run,
deploy and rollback keep a working ``current`` image."""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from dwfhpc.calibrate import calibrate_file
from dwfhpc.errors import DwfError
from dwfhpc.images import build_image, check_image, deploy_image, rollback_image
from dwfhpc.simulate import simulate_decam_exposure

pytestmark = pytest.mark.apptainer
REPO = Path(__file__).resolve().parents[1]


def _source_hash() -> str:
    h = hashlib.sha256()
    for p in sorted([REPO / "containers" / "dwfhpc.def", REPO / "pyproject.toml", *(REPO / "dwfhpc").rglob("*.py")]):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def image(apptainer_available) -> Path:
    """Built once per source version (a build takes a few minutes), cached under /tmp."""
    cache = Path(os.environ.get("DWFHPC_IMAGE_CACHE", "/tmp/dwfhpc-image-cache"))
    path = cache / f"dwfhpc-{_source_hash()}.sif"
    if not path.exists():
        log = cache / "build.log"
        cache.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            build_image("dwfhpc", path, log=fh)
    return path


def test_image_runs_dwfhpc_and_carries_labels(image):
    assert check_image(image) == "dwfhpc 0.1.0"
    labels = subprocess.run(["apptainer", "inspect", "--labels", str(image)], capture_output=True, text=True).stdout
    assert "org.dwfhpc.version: 0.1.0" in labels and "org.dwfhpc.commit" in labels


def test_calibration_inside_the_image_equals_the_host_run(image, tmp_path):
    raw = simulate_decam_exposure(tmp_path / "raw", expnum=77, ccds=[32], seed=4)
    host = calibrate_file(raw, tmp_path / "host")
    subprocess.run(["apptainer", "exec", "--bind", str(tmp_path), str(image), "dwfhpc", "calibrate", str(raw),
                    "--no-bias", "--no-flat", "--out", str(tmp_path / "image")], check=True, capture_output=True)
    for kind in ("cal", "mask"):
        a = fits.getdata(host.products[kind], 1)
        b = fits.getdata(tmp_path / "image" / host.products[kind].name, 1)
        assert np.array_equal(a, b) if kind == "mask" else np.allclose(a, b, rtol=1e-6, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "image").iterdir()) == sorted(p.name for p in host.products.values())


def test_deploy_and_rollback_keep_a_working_current(image, tmp_path):
    newer = tmp_path / "newer.sif"
    shutil.copyfile(image, newer)
    with open(newer, "ab") as fh:  # a different build: another checksum, same behaviour
        fh.write(b"\0")
    deployed = tmp_path / "deployed"
    first = deploy_image("dwfhpc", image, deployed)
    second = deploy_image("dwfhpc", newer, deployed)
    assert first != second and (deployed / f"{second.name}.sha256").exists()
    current = deployed / "dwfhpc.sif"
    assert os.readlink(current) == second.name and os.readlink(deployed / "dwfhpc.previous.sif") == first.name
    assert check_image(current) == "dwfhpc 0.1.0"
    rollback_image("dwfhpc", deployed)
    assert os.readlink(current) == first.name and check_image(current) == "dwfhpc 0.1.0"
    with pytest.raises(DwfError, match="no previous"):
        rollback_image("other", deployed)


@pytest.mark.slurm
def test_slurm_array_runs_its_calibration_step_inside_the_image(image, slurm_cluster, tmp_path):
    """A submitit array on the real Slurm with node.container: true: staging and copy-back on the host,
    calibration through apptainer exec."""
    import time

    import submitit

    from dwfhpc.config import load_site
    from dwfhpc.node import TaskSpec
    from dwfhpc.node.run import run_task
    from dwfhpc.parts import pack_exposure

    site = load_site("local", workdir=tmp_path, overrides={"node": {"container": True, "image": str(image)}})
    raw = simulate_decam_exposure(tmp_path / "raw", expnum=41, ccds=[25, 32], seed=2)
    part = pack_exposure(raw, site.path(site.ingest.inbox), codec="rice", parts=1, jobs=1)[0]
    spec = TaskSpec.from_site(site, part.manifest, part.tar, require_masters=False)
    assert spec.container and spec.image == str(image)
    spec_path = spec.write(site.path(site.ingest.specs) / f"{part.tar.stem}.json")
    executor = submitit.SlurmExecutor(folder=site.path(site.ingest.jobs_dir) / "%j")
    executor.update_parameters(partition="main", time=10, mem="2G", array_parallelism=2, job_name="dwf-DECam_00000041-p1")
    jobs = executor.map_array(run_task, [str(spec_path)] * 2, [0, 1])
    deadline = time.monotonic() + 300
    while not all(j.done() for j in jobs):
        assert time.monotonic() < deadline, "array did not finish"
        time.sleep(1)
    for job, ccd in zip(jobs, (25, 32)):
        r = job.result()
        assert r["status"] == "ok", r.get("error")
        assert r["container"] is True and r["ccd"] == ccd and r["qa"]["fwhm_arcsec"] > 0
