"""The README's main command, small: a night with one bias, one flat and two science exposures."""

import json

from dwfhpc.cli import main


def test_demo_night_calibrates_every_ccd_and_loses_none(tmp_path, capsys):
    workdir = tmp_path / "night"
    rc = main(["demo", "--workdir", str(workdir), "--exposures", "2", "--cadence", "2", "--biases", "1",
               "--flats", "1", "--ccds", "25,32"])
    out = capsys.readouterr().out
    assert rc == 0, out
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["exposures"] == 2 and summary["calibrated"] == 4
    assert summary["failed"] == 0 and summary["lost"] == 0
    assert summary["latency_p95"] >= summary["latency_p50"] > 0
    assert "latency from file complete to products" in out and "calibrate" in out
    report = workdir / "report" / "night-2026-11-24.html"
    assert report.exists() and report.read_text().count("<svg") == 4
    products = sorted(p.name for p in (workdir / "cluster" / "products" / "2026-11-24").rglob("*.cal.fits.fz"))
    assert products == ["DECam_01100003_25.cal.fits.fz", "DECam_01100003_32.cal.fits.fz",
                        "DECam_01100004_25.cal.fits.fz", "DECam_01100004_32.cal.fits.fz"]
