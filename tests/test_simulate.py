"""The simulator writes real-format raw files whose noise, geometry and stars match their headers."""

import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

from dwfhpc.cli import main
from dwfhpc.errors import DwfError
from dwfhpc.instruments import DECam, HSC, exposure_info
from dwfhpc.simulate import DECAM_HEADERS, parse_ccd_list, simulate_decam_exposure, simulate_hsc_visit

warnings.simplefilter("ignore", FITSFixedWarning)
SOUTH, NORTH = 25, 32  # S1 and N1: their amplifier layouts differ


@pytest.fixture(scope="module")
def exposure(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    path = simulate_decam_exposure(out, expnum=424242, ccds=[SOUTH, NORTH], seed=3,
                                   catalog_out=out / "refcat.fits", filter_="r")
    return path, out / "refcat.fits"


def test_extensions_and_every_real_keyword(exposure):
    path, _ = exposure
    real = fits.open(DECAM_HEADERS)
    real_by_ccd = {h.header["CCDNUM"]: h.header for h in real[1:]}
    with fits.open(path) as hdul:
        assert len(hdul) == 3
        assert hdul[0].header["OBSTYPE"] == "object" and hdul[0].header["EXPNUM"] == 424242
        assert hdul[0].header["FILTER"].startswith("r DECam")
        for key in real[0].header:
            if key not in ("NEXTEND", "") :
                assert key in hdul[0].header, key
        for hdu in hdul[1:]:
            ccd = hdu.header["CCDNUM"]
            assert hdu.data.shape == (4146, 2160)
            assert hdu.header["BITPIX"] == 16 and hdu.header["BZERO"] == 32768
            for key in real_by_ccd[ccd]:
                if key.startswith(("RAW", "NAXIS", "BITPIX")) or key in ("XTENSION", "PCOUNT", "GCOUNT", ""):
                    continue
                assert key in hdu.header, (ccd, key)


def test_overscan_noise_is_read_noise_over_gain(exposure):
    path, _ = exposure
    decam = DECam()
    with fits.open(path) as hdul:
        for hdu in hdul[1:]:
            geometry = decam.geometry(hdu.header)
            data = hdu.data.astype(float)
            for amp in geometry.amps:
                overscan = data[amp.bias.slices][:, 3:-3]
                noise = np.std(overscan - np.median(overscan, axis=1, keepdims=True))
                expected = amp.rdnoise / amp.gain
                assert abs(noise / expected - 1) < 0.3, (hdu.header["EXTNAME"], amp.name, noise, expected)


def test_stars_sit_at_catalog_positions_through_the_header_wcs(exposure):
    path, refcat = exposure
    cat = Table.read(refcat)
    good = total = 0
    with fits.open(path) as hdul:
        for hdu in hdul[1:]:
            data = hdu.data.astype(float)
            x, y = WCS(hdu.header).all_world2pix(cat["ra"], cat["dec"], 0)
            sat = min(hdu.header["SATURATA"], hdu.header["SATURATB"])
            ok = (x > 80) & (x < 2080) & (y > 80) & (y < 4060) & (cat["mag"] > 15.5) & (cat["mag"] < 18.5)
            for xi, yi in zip(x[ok], y[ok]):
                x0, y0 = int(round(xi)), int(round(yi))
                stamp = data[y0 - 6 : y0 + 7, x0 - 6 : x0 + 7]
                if stamp.max() >= sat * 0.95:
                    continue
                background = np.median(data[y0 - 25 : y0 + 26, x0 - 25 : x0 + 26])
                s = np.clip(stamp - background, 0, None)
                yy, xx = np.mgrid[y0 - 6 : y0 + 7, x0 - 6 : x0 + 7]
                cx, cy = (s * xx).sum() / s.sum(), (s * yy).sum() / s.sum()
                # a faint neighbour can pull a centroid: require nearly all stars within 0.3 px
                total += 1
                good += np.hypot(cx - xi, cy - yi) < 0.3
    assert total >= 5
    assert good / total > 0.9


def test_deterministic_for_a_seed(tmp_path):
    a = simulate_decam_exposure(tmp_path / "a", expnum=7, ccds=[NORTH], seed=11)
    b = simulate_decam_exposure(tmp_path / "b", expnum=7, ccds=[NORTH], seed=11)
    c = simulate_decam_exposure(tmp_path / "c", expnum=7, ccds=[NORTH], seed=12)
    da, db, dc = (fits.getdata(p, 1) for p in (a, b, c))
    assert np.array_equal(da, db)
    assert not np.array_equal(da, dc)


def test_bias_and_flat_obstypes_and_levels(tmp_path):
    bias = simulate_decam_exposure(tmp_path, expnum=10, obstype="zero", ccds=[SOUTH])
    flat = simulate_decam_exposure(tmp_path, expnum=11, obstype="dome flat", ccds=[SOUTH])
    assert exposure_info(bias).kind == "bias" and fits.getheader(bias)["EXPTIME"] == 0
    assert exposure_info(flat).kind == "flat"
    geometry = DECam().geometry(fits.getheader(flat, 1))
    raw = fits.getdata(flat, 1).astype(float)
    amp = geometry.amps[0]
    level = np.median(raw[amp.data.slices]) - np.median(raw[amp.bias.slices])
    assert 10000 < level < 40000  # a dome flat well exposed, not saturated
    raw_bias = fits.getdata(bias, 1).astype(float)
    assert abs(np.median(raw_bias[amp.data.slices]) - np.median(raw_bias[amp.bias.slices])) < 5


def test_info_reports_expnum_and_night(exposure, capsys):
    path, _ = exposure
    assert main(["info", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert '"expnum": 424242' in out and '"night": "2026-11-24"' in out


def test_hsc_visit_files_group_by_exp_id(tmp_path):
    paths = simulate_hsc_visit(tmp_path, visit=903334, ccds=[0, 23, 100], seed=1)
    assert [p.name for p in paths] == ["HSCA90333400.fits", "HSCA90333423.fits", "HSCA90333500.fits"]
    infos = [exposure_info(p) for p in paths]
    assert {i.expid for i in infos} == {"HSC_0903334"} and [i.ccds[0] for i in infos] == [0, 23, 100]
    header = fits.getheader(paths[1])
    geometry = HSC().geometry(header)
    data = fits.getdata(paths[1]).astype(float)
    assert data.shape == (4241, 2144) and len(geometry.amps) == 4
    for amp in geometry.amps:
        overscan = data[amp.bias.slices]
        noise = np.std(overscan - np.median(overscan, axis=1, keepdims=True))
        assert abs(noise / (amp.rdnoise / amp.gain) - 1) < 0.3


def test_cadence_only_ever_shows_complete_files(tmp_path):
    """Files appear under their final name only when complete (written to a dot-name first)."""
    out = tmp_path / "raw"
    proc = subprocess.Popen([sys.executable, "-m", "dwfhpc.cli", "simulate", "--exposures", "3", "--ccds", "1",
                             "--cadence", "1", "--out", str(out)], stdout=subprocess.PIPE, text=True)
    seen_incomplete = []

    def watch():
        from dwfhpc.fitsio_utils import check_complete
        while proc.poll() is None:
            for f in out.glob("DECam_*.fits.fz") if out.exists() else []:
                try:
                    check_complete(f)
                except Exception as exc:  # noqa: BLE001 - recording any failure is the point
                    seen_incomplete.append((f.name, str(exc)))
            time.sleep(0.05)

    t = threading.Thread(target=watch)
    t.start()
    proc.communicate(timeout=120)
    t.join()
    assert proc.returncode == 0
    assert sorted(p.name for p in out.glob("DECam_*.fits.fz")) == [f"DECam_{n:08d}.fits.fz" for n in (1100001, 1100002, 1100003)]
    assert not seen_incomplete


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    with pytest.raises(DwfError, match="science CCD"):
        simulate_decam_exposure(tmp_path, expnum=1, ccds=[63])
    with pytest.raises(DwfError, match="CCD list"):
        parse_ccd_list("1-x")
    assert main(["simulate", "--filter", "q", "--out", str(tmp_path)]) == 2
    assert "unknown DECam filter" in capsys.readouterr().err
