"""The night report renders a self-contained page whose plots a real browser draws."""

import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from dwfhpc.report import STAGES, CCDRecord, ExposureRecord, NightData, render_html, write_report


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
