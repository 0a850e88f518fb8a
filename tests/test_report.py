"""The night report renders a self-contained page whose plots a real browser draws."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from dwfhpc.instruments import hsc_focal_plane
from dwfhpc.report import STAGES, CCDRecord, ExposureRecord, NightData, render_html, write_report
from dwfhpc.report.counts import tally
from dwfhpc.simulate import HSC_HEADER


def _night() -> NightData:
    exposures, ccds = [], []
    t0 = 1_700_000_000.0
    for i in range(6):
        e = ExposureRecord(expid=f"DECam_{1000 + i:08d}", expnum=1000 + i, filter="g", field="F1",
                           n_ccds=62, n_done=61, t_complete=t0 + 60 * i, t_products=t0 + 60 * i + 45,
                           stages={s: 5.0 + i for s in STAGES}, fwhm=1.1 + 0.1 * i, sky=300.0, nsources=210)
        exposures.append(e)
        for c in range(1, 63):
            state = "failed" if c == 2 else "done"
            ccds.append(CCDRecord(e.expid, c, state, 1, "no master flat" if state == "failed" else None, fwhm=1.2))
    return NightData("2023-11-13", "decam", exposures, ccds)


def test_page_is_self_contained_with_four_plots():
    page = render_html(_night())
    assert page.count("<svg") == 4
    assert "http://" not in page.split("<svg", 1)[0] and "<script" not in page  # nothing to fetch
    assert "no master flat" in page and "DECam_00001005" in page
    assert "45.0 s / 45.0 s" in page  # latency p50/p95


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_plots_render_in_headless_chromium(tmp_path):
    browser = _chromium()
    if not browser:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (Debian package chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    page = write_report(_night(), tmp_path)
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1800"]
    subprocess.run([browser, *flags, f"--screenshot={shot}", page.as_uri()], check=True,
                   capture_output=True, timeout=120)
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<svg") == 4
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # the plot area (below the summary table) holds coloured pixels: bars, lines and CCDs
    plots = img[300:1100]
    coloured = (np.abs(plots[..., 0] - plots[..., 1]) > 40) | (np.abs(plots[..., 1] - plots[..., 2]) > 40)
    assert coloured.mean() > 0.02
    # the focal-plane map shows the failed CCD in red somewhere
    red = (img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80)
    assert red.sum() > 200


# --------------------------------------------------------------------------- counts and the HSC focal plane
def _mixed_night(instrument: str, science_ccds: list[int], failed: int) -> NightData:
    """One bias and one science exposure; ``failed`` is the science CCD that failed."""
    bias = ExposureRecord(expid="E_bias", expnum=1, kind="bias", n_ccds=len(science_ccds))
    sci = ExposureRecord(expid="E_sci", expnum=2, kind="science", n_ccds=len(science_ccds))
    ccds = [CCDRecord("E_bias", c, "done") for c in science_ccds]
    ccds += [CCDRecord("E_sci", c, "failed" if c == failed else "done", 1, "no master flat" if c == failed else None,
                       fwhm=0.8) for c in science_ccds]
    return NightData("2026-11-24", instrument, [bias, sci], ccds)


def test_summary_counts_science_and_calibration_ccds_apart():
    page = render_html(_mixed_night("decam", [25, 32, 33], failed=32))
    rows = dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", page))
    assert rows["science CCDs"] == "2 calibrated, 1 failed, 0 lost, 0 in flight (of 3)"
    assert rows["calibration CCDs"] == "3 calibrated, 0 failed, 0 lost, 0 in flight (of 3)"
    assert "CCDs calibrated" not in rows  # no count that adds the two together


def test_tally_sorts_every_task_state_into_one_group_and_column():
    counts = tally([("science", "done"), ("science", "running"), ("science", "submitted"), ("science", "lost"),
                    ("bias", "done"), ("flat", "queued"), ("flat", "failed")], missing={"science": 2})
    assert counts["science"].as_dict() == {"calibrated": 1, "failed": 0, "lost": 1, "in_flight": 4, "total": 6}
    assert counts["calibration"].as_dict() == {"calibrated": 1, "failed": 1, "lost": 0, "in_flight": 1, "total": 3}
    assert counts["science"].phrase("science CCDs") == "6 science CCDs: 1 calibrated, 0 failed, 1 lost, 4 in flight"
    with pytest.raises(ValueError, match="unknown task state"):
        tally([("science", "exploded")])


def test_hsc_focal_plane_table_is_the_camera_and_agrees_with_the_real_header():
    boxes = hsc_focal_plane.ccd_boxes()
    assert sorted(boxes) == list(range(104))
    # no two CCDs overlap; the four corner CCDs are turned a quarter
    for a, (_, x0, y0, w, h) in boxes.items():
        for b, (_, x1, y1, w1, h1) in boxes.items():
            if a < b:
                assert not (x0 < x1 + w1 and x1 < x0 + w and y0 < y1 + h1 and y1 < y0 + h), (a, b)
    assert {c for c, b in boxes.items() if b[3] > b[4]} == {100, 101, 102, 103}
    # DET-ID 23's real WCS puts the optical axis (CRPIX) as far from the raw frame's centre as the table puts
    # the CCD's centre from the axis
    header = fits.getheader(HSC_HEADER)
    assert header["DET-ID"] == 23
    dx, dy = float(header["CRPIX1"]) - (2144 + 1) / 2, float(header["CRPIX2"]) - (4241 + 1) / 2
    _, x, y, _ = hsc_focal_plane.CCDS[23]
    assert abs(np.hypot(dx, dy) / np.hypot(x, y) - 1) < 0.01
    assert abs(abs(dx) / abs(x) - 1) < 0.02 and abs(abs(dy) / abs(y) - 1) < 0.02


def test_hsc_night_is_drawn_on_the_hsc_focal_plane():
    page = render_html(_mixed_night("hsc", [41, 42, 49], failed=42))
    states = dict(re.findall(r'id="ccd-(\d+)-(\w+)"', page))
    assert len(states) == 104 and "HSC focal plane" in page
    assert (states["41"], states["42"], states["49"], states["0"]) == ("done", "failed", "done", "missing")
    decam = dict(re.findall(r'id="ccd-(\d+)-(\w+)"', render_html(_mixed_night("decam", [25], failed=0))))
    assert len(decam) == 62 and decam["25"] == "done"


def test_status_does_not_import_the_plotting_stack():
    """`dwfhpc status` is run often on a login node: it must not pay matplotlib's import."""
    code = "import sys, dwfhpc.cli, dwfhpc.commands.status, dwfhpc.ingest.status; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
