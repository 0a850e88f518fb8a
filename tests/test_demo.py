"""The README's main command, small (one bias, one flat, two science exposures), and the operator
commands on the data flow it produced."""

import json

import pytest

from dwfhpc.cli import main


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo") / "night"
    rc = main(["demo", "--workdir", str(workdir), "--exposures", "2", "--cadence", "2", "--biases", "1",
               "--flats", "1", "--ccds", "25,32"])
    return workdir, rc


def test_demo_night_calibrates_every_ccd_and_loses_none(night, capsys):
    workdir, rc = night
    assert rc == 0
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["exposures"] == 2 and summary["calibrated"] == 4
    assert summary["failed"] == 0 and summary["lost"] == 0
    assert summary["latency_p95"] >= summary["latency_p50"] > 0
    report = workdir / "report" / "night-2026-11-24.html"
    assert report.exists() and report.read_text().count("<svg") == 4
    products = sorted(p.name for p in (workdir / "cluster" / "products" / "2026-11-24").rglob("*.cal.fits.fz"))
    assert products == ["DECam_01100003_25.cal.fits.fz", "DECam_01100003_32.cal.fits.fz",
                        "DECam_01100004_25.cal.fits.fz", "DECam_01100004_32.cal.fits.fz"]


def test_seeing_reports_the_simulated_fwhm(night, capsys):
    workdir, _ = night
    assert main(["seeing", "--workdir", str(workdir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["expid"] for r in rows] == ["DECam_01100003", "DECam_01100004"]
    assert all(abs(r["fwhm"] - 1.2) < 0.1 and r["n_ccds"] == 2 for r in rows)  # DECam scale 0.263"/px
    assert main(["seeing", "--workdir", str(workdir), "--exposure", "1100004", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["expid"] == "DECam_01100004"
    assert main(["seeing", "--workdir", str(workdir), "--exposure", "999"]) == 2
    assert "no calibrated exposure '999'" in capsys.readouterr().err


def test_inventory_counts_fields_and_filters(night, capsys):
    workdir, _ = night
    assert main(["inventory", "--workdir", str(workdir), "--night", "2026-11-24", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"field": "DWF_150.000+02.200", "filter": "g", "exposures": 2}]
    assert main(["inventory", "--workdir", str(workdir), "--night", "2020-01-01"]) == 2
    assert "no calibrated data for night 2020-01-01 (nights: 2026-11-24)" in capsys.readouterr().err


def test_demo_state_db_holds_every_task_and_status_agrees(night, capsys):
    workdir, _ = night
    assert main(["status", "--workdir", str(workdir), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["tasks"] == {"done": 8}  # 2 bias + 2 flat + 4 science CCDs, each collected once
    assert s["exposures"] == {"done": 4} and s["failures"] == []


@pytest.mark.slurm
def test_demo_night_with_the_slurm_executor(slurm_cluster, tmp_path):
    from dwfhpc.state import StateDB

    workdir = tmp_path / "night"
    rc = main(["demo", "--workdir", str(workdir), "--exposures", "2", "--cadence", "2", "--biases", "1",
               "--flats", "1", "--ccds", "25,32", "--executor", "slurm"])
    assert rc == 0
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["calibrated"] == 4 and summary["lost"] == 0 and summary["failed"] == 0
    with StateDB(workdir / "cluster" / "state.sqlite") as db:
        subs = db.submissions()
        assert {s.executor for s in subs} == {"slurm"} and all(s.job_id.isdigit() for s in subs)
        assert all(t.result["status"] == "ok" for t in db.tasks())
