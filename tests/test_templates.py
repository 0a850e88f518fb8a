"""Scheduler scripts from slurm_templates/ and pbs_templates/: a rendered sbatch array runs the node
entry point on the real Slurm; PBS scripts are checked as text (there is no PBS server on these machines)."""

import json
import subprocess
import time

import pytest

from dwfhpc.config import load_site
from dwfhpc.errors import DwfError
from dwfhpc.node import TaskSpec, result_path
from dwfhpc.parts import pack_exposure
from dwfhpc.simulate import simulate_decam_exposure
from dwfhpc.templates import array_script, render, write_array_script


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("tpl")
    site = load_site("local", workdir=root)
    raw = simulate_decam_exposure(root / "raw", expnum=31, ccds=[25, 32], seed=1)
    part = pack_exposure(raw, site.path(site.ingest.inbox), codec="rice", parts=1, jobs=1)[0]
    spec = TaskSpec.from_site(site, part.manifest, part.tar, require_masters=False)
    return site, spec.write(site.path(site.ingest.specs) / f"{part.tar.stem}.json")


@pytest.mark.slurm
def test_sbatch_array_from_the_template_runs_every_ccd(slurm_cluster, spec):
    site, spec_path = spec
    script = write_array_script(site, "slurm", spec_path, 2, "dwf-DECam_00000031-p1",
                                spec_path.parent / "calibrate.sbatch", site.path(site.ingest.jobs_dir))
    text = script.read_text()
    assert "#SBATCH --array=0-1%2" in text and "--signal=B:USR2@60" in text
    subprocess.run(["bash", "-n", str(script)], check=True)
    job = slurm_cluster.run("sbatch", "--parsable", "--partition=main", str(script)).stdout.strip()
    deadline = time.monotonic() + 180
    results = [result_path(spec_path, i) for i in (0, 1)]
    while not all(p.exists() for p in results):
        assert time.monotonic() < deadline, f"array {job} did not finish; logs in {site.path(site.ingest.jobs_dir)}"
        time.sleep(0.5)
    for i, p in enumerate(results):
        r = json.loads(p.read_text())
        assert r["status"] == "ok" and r["ccd"] == (25, 32)[i], r.get("error")
    products = site.path(site.calibration.products) / "2026-11-24" / "DECam_00000031"
    assert sorted(p.name for p in products.glob("*.cal.fits.fz")) == ["DECam_00000031_25.cal.fits.fz",
                                                                       "DECam_00000031_32.cal.fits.fz"]


@pytest.mark.parametrize("syntax,array_line", [("J", "#PBS -J 0-3"), ("t", "#PBS -t 0-3%64")])
def test_pbs_script_for_both_array_syntaxes(spec, syntax, array_line):
    """No PBS server runs here: the script is checked as text and by `bash -n`."""
    site, spec_path = spec
    site = load_site("g2", overrides={"scheduler": {"pbs_array_syntax": syntax}})
    text = array_script(site, "pbs", spec_path, 4, "dwf-DECam_00000031-p1", "/logs")
    assert array_line in text and "#PBS -N dwf-DECam_00000031-p1" in text
    assert "#PBS -q gstar" in text and "#PBS -A p025_swin" in text and "module load python/3.11" in text
    assert ("select=1:ncpus=1:mem=4096mb" in text) == (syntax == "J")
    assert ("#PBS -l nodes=1:ppn=1" in text) == (syntax == "t")
    assert f"node run {spec_path}" in text and "--index" not in text  # index from PBS_ARRAY_INDEX / PBS_ARRAYID
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def test_single_task_parts_are_plain_jobs(spec):
    site, spec_path = spec
    text = array_script(site, "slurm", spec_path, 1, "dwf-x-p1", "/logs")
    assert "#SBATCH --array" not in text
    assert "exec" in text and "--index \"${SLURM_ARRAY_TASK_ID:-0}\"" in text


def test_names_with_spaces_reach_the_script_quoted(spec, tmp_path):
    site, _ = spec
    text = array_script(site, "slurm", tmp_path / "a spec; rm -rf x.json", 2, "dwf-x-p1", "/logs")
    assert "'" + str(tmp_path / "a spec; rm -rf x.json") + "'" in text


def test_unknown_template_is_a_clear_error():
    with pytest.raises(DwfError, match="no slurm template 'nope.sbatch'"):
        render("slurm", "nope.sbatch")
    with pytest.raises(DwfError, match="no templates for scheduler 'lsf'"):
        render("lsf", "x")


@pytest.mark.slurm
def test_stage_image_copies_the_image_to_node_local_storage(slurm_cluster, tmp_path):
    from dwfhpc.atomic import sha256_file
    from dwfhpc.templates import stage_image_script

    image = tmp_path / "shared" / "dwfhpc.sif"
    image.parent.mkdir()
    image.write_bytes(bytes(range(256)) * 4000)
    local = tmp_path / "node-local"
    script = tmp_path / "stage.sbatch"
    script.write_text(stage_image_script(load_site("local"), "slurm", image, local, 1, tmp_path))
    slurm_cluster.run("sbatch", "--parsable", "--partition=main", str(script))
    deadline = time.monotonic() + 60
    while not (local / "dwfhpc.sif").exists():
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert sha256_file(local / "dwfhpc.sif") == sha256_file(image)
    assert not list(local.glob(".staging.*"))


def test_stage_image_pbs_twin_visits_every_node():
    """No PBS server here: checked as text and by `bash -n`."""
    from dwfhpc.templates import stage_image_script

    text = stage_image_script(load_site("g2"), "pbs", "/shared/dwfhpc.sif", "/local/dwf", 4, "/logs")
    assert "#PBS -l nodes=4:ppn=1" in text and "$PBS_NODEFILE" in text and "sha256sum -c" in text
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)
