"""The README's main command, small (one bias, one flat, two science exposures), DECam and HSC, and the
operator commands on the data flow it produced."""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dwfhpc.cli import main

HSC_CCDS = (41, 49)


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
    # science and calibration CCDs are counted apart, as the demo's summary counts them
    assert s["ccds"]["science"] == {"calibrated": 4, "failed": 0, "lost": 0, "in_flight": 0, "total": 4}
    assert s["ccds"]["calibration"] == {"calibrated": 4, "failed": 0, "lost": 0, "in_flight": 0, "total": 4}
    assert s["ccds"] == json.loads((workdir / "summary.json").read_text())["ccds"]


def test_demo_waits_while_a_recorded_part_is_still_being_moved_into_the_store(night):
    """The ingest records a part, then moves its files (crash-safe order); a poll in between once
    ended the slurm demo with "manifest is missing" (CI). It must read as "not finished yet"."""
    from dwfhpc.demo import _finished
    from dwfhpc.statedb import StateDB

    workdir, _ = night
    with StateDB(workdir / "cluster" / "state.sqlite") as db:
        part = next(p for p in db.parts() if p.kind == "science")
        stored = Path(part.manifest)
        assert _finished(db, part.expid, default=99) is True  # every promised CCD is done
        hidden = stored.rename(stored.with_suffix(".moving"))
        try:
            assert _finished(db, part.expid, default=1) is False  # recorded; not in the store yet
        finally:
            hidden.rename(stored)


@pytest.mark.slurm
@pytest.mark.parametrize("mode", ["workers", "arrays"])
def test_demo_night_with_the_slurm_executor(slurm_cluster, tmp_path, mode):
    """The demo follows the night's default, warm workers (configs/local.yaml); ``--workers 0``: arrays."""
    from dwfhpc.statedb import StateDB

    workdir = tmp_path / "night"
    rc = main(["demo", "--workdir", str(workdir), "--exposures", "2", "--cadence", "2", "--biases", "1",
               "--flats", "1", "--ccds", "25,32", "--executor", "slurm", *(["--workers", "0"] if mode == "arrays" else [])])
    assert rc == 0
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["calibrated"] == 4 and summary["lost"] == 0 and summary["failed"] == 0
    with StateDB(workdir / "cluster" / "state.sqlite") as db:
        subs, tasks = db.submissions(), db.tasks()
        assert all(t.result.ok for t in tasks)
        if mode == "arrays":
            assert {s.executor for s in subs} == {"slurm"} and all(s.job_id.isdigit() for s in subs)
            assert not any(t.result.worker for t in tasks)
        else:  # every CCD (calibration frames too) run by one of the 2 Slurm worker tasks
            assert {s.executor for s in subs} == {"slurm+workers"}
            workers = {t.result.worker.job_id for t in tasks}
            assert 1 <= len(workers) <= 2 and all(w.split("_")[0].isdigit() for w in workers), workers


# --------------------------------------------------------------------------- HSC
@pytest.fixture(scope="module")
def hsc_night(tmp_path_factory):
    """One bias, one dome flat and two science visits of two CCD files each, through push and ingest."""
    workdir = tmp_path_factory.mktemp("hscdemo") / "night"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["demo", "--instrument", "hsc", "--workdir", str(workdir), "--exposures", "2", "--cadence", "2",
                   "--biases", "1", "--flats", "1", "--ccds", ",".join(map(str, HSC_CCDS))])
    return workdir, rc, out.getvalue()


def test_hsc_demo_calibrates_every_ccd_of_every_visit_and_loses_none(hsc_night):
    workdir, rc, printed = hsc_night
    assert rc == 0, printed
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["instrument"] == "hsc" and summary["exposures"] == 2
    assert summary["ccds"]["science"] == {"calibrated": 4, "failed": 0, "lost": 0, "in_flight": 0, "total": 4}
    assert summary["ccds"]["calibration"] == {"calibrated": 4, "failed": 0, "lost": 0, "in_flight": 0, "total": 4}
    assert summary["latency_p95"] >= summary["latency_p50"] > 0
    # the camera wrote one file per CCD; push grouped them into visits (1 bias, 1 flat, 2 science)
    raw = sorted(p.name for p in (workdir / "telescope" / "raw").iterdir())
    assert raw == [f"HSCA{v:06d}{c:02d}.fits" for v in (240000, 240002, 240004, 240006) for c in HSC_CCDS]
    products = sorted(p.name for p in (workdir / "cluster" / "products").rglob("HSC_*") if p.is_file())
    assert products == sorted(f"HSC_{v:07d}_{c}.{kind}" for v in (240004, 240006) for c in HSC_CCDS
                              for kind in ("cal.fits.fz", "mask.fits.fz", "cat.fits", "qa.json"))
    assert "night 2026-11-24 (hsc): 2 science exposures" in printed


def test_hsc_counts_agree_between_status_demo_summary_and_report(hsc_night, capsys):
    workdir, _, printed = hsc_night
    summary = json.loads((workdir / "summary.json").read_text())
    assert main(["status", "--workdir", str(workdir), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["ccds"] == summary["ccds"]
    assert status["tasks"] == {"done": 8}
    # the demo's printed table and status's text use the same words
    assert "4 science CCDs: 4 calibrated, 0 failed, 0 lost, 0 in flight" in printed
    assert "4 calibration CCDs: 4 calibrated, 0 failed, 0 lost, 0 in flight" in printed
    assert main(["status", "--workdir", str(workdir)]) == 0
    text = capsys.readouterr().out
    assert "4 science CCDs: 4 calibrated" in text and "4 calibration CCDs: 4 calibrated" in text
    # the report's header: one row per group, never a sum of the two
    page = (workdir / "report" / "night-2026-11-24.html").read_text()
    rows = dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", page))
    assert rows["science CCDs"] == "4 calibrated, 0 failed, 0 lost, 0 in flight (of 4)"
    assert rows["calibration CCDs"] == "4 calibrated, 0 failed, 0 lost, 0 in flight (of 4)"
    assert rows["instrument"] == "hsc" and "CCDs calibrated" not in rows


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_hsc_report_focal_plane_loads_in_headless_chromium(hsc_night, tmp_path):
    browser = _chromium()
    if not browser:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (Debian package chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    workdir, _, _ = hsc_night
    page = workdir / "report" / "night-2026-11-24.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2400"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    assert dom.count("<svg") == 4 and "HSC focal plane" in dom
    # every HSC science CCD is drawn, by DET-ID: the two observed ones calibrated, the rest not observed
    ccds = dict(re.findall(r'id="ccd-(\d+)-(\w+)"', dom))
    assert len(ccds) == 104 and {int(c) for c in ccds} == set(range(104))
    assert {int(c) for c, s in ccds.items() if s == "done"} == set(HSC_CCDS)
    assert {s for c, s in ccds.items() if int(c) not in HSC_CCDS} == {"missing"}
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True,
                   timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # the two calibrated CCDs are drawn in the map's "done" green (#2e7d32)
    green = (np.abs(img - np.array([0x2E, 0x7D, 0x32])).max(axis=2) <= 12)
    assert green.sum() > 300


def test_hsc_demo_with_hscpipe_but_no_image_says_what_is_missing(tmp_path, capsys):
    workdir = tmp_path / "night"
    rc = main(["demo", "--instrument", "hsc", "--backend", "hscpipe", "--workdir", str(workdir)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--backend hscpipe needs" in err
    assert "--image" in err and "--hscpipe-repo" in err
    assert not workdir.exists()  # refused before anything was simulated
    assert main(["demo", "--backend", "hscpipe", "--workdir", str(workdir)]) == 2
    assert "add --instrument hsc" in capsys.readouterr().err


def test_hsc_demo_site_runs_hscpipe_in_the_configured_image(tmp_path, monkeypatch):
    """With apptainer on PATH, an image and a butler repo, the demo's site sends science CCDs to hscpipe."""
    from dwfhpc.demo import check_backend, demo_site

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apptainer").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "apptainer").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    image, repo = tmp_path / "hscpipe.sif", tmp_path / "repo"
    image.write_bytes(b"stand-in image")
    (repo / "CALIB").mkdir(parents=True)
    check_backend("hsc", "hscpipe", image=str(image), hscpipe_repo=str(repo))  # nothing missing: no error
    site = demo_site(tmp_path / "night", codec="rice", streams=2, executor="local", instrument="hsc",
                     backend="hscpipe", image=str(image), hscpipe_repo=str(repo))
    assert (site.instrument, site.node.backend) == ("hsc", "hscpipe")
    assert site.node.image == str(image) and site.node.hscpipe_repo == str(repo)
    assert site.push.visit_quiet_seconds == 2.0
