"""SIP -> TPV conversion checked against astropy/wcslib on a real DECam distortion."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import fit_wcs_from_points

from dwfhpc.cli import main
from dwfhpc.errors import DwfError
from dwfhpc.sip_tpv import sip_to_tpv

warnings.simplefilter("ignore", FITSFixedWarning)


def _sip_header(degree: int) -> fits.Header:
    """A SIP WCS with a realistic wide-field distortion (radial, 2e-3 at the CCD edge)."""
    h = fits.Header()
    h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = 2, 2048, 4176
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    h["CRVAL1"], h["CRVAL2"] = 320.25, 0.5
    h["CRPIX1"], h["CRPIX2"] = -3000.0, 9000.0   # a CCD far from the optical axis, like HSC
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -4.6e-5, 2.0e-7, 1.5e-7, 4.67e-5
    h["A_ORDER"] = h["B_ORDER"] = degree
    rng = np.random.default_rng(1)
    for p in range(degree + 1):
        for q in range(degree + 1 - p):
            if p + q < 2:
                continue
            scale = 1e-4 / (1000.0 ** (p + q - 1))
            h[f"A_{p}_{q}"] = rng.normal(0, scale)
            h[f"B_{p}_{q}"] = rng.normal(0, scale)
    return h


@pytest.mark.parametrize("degree", [2, 3, 5])
def test_tpv_matches_sip_to_a_milliarcsecond(degree):
    sip = _sip_header(degree)
    tpv = sip_to_tpv(sip)
    assert tpv["CTYPE1"] == "RA---TPV" and "A_2_0" not in tpv and "PV1_1" in tpv
    y, x = np.mgrid[0:4176:101j, 0:2048:51j]
    a = WCS(sip).pixel_to_world(x.ravel(), y.ravel())
    b = WCS(tpv).pixel_to_world(x.ravel(), y.ravel())
    sep = a.separation(b).to_value("mas")
    # the distortion is large: make sure the test would notice if it were dropped
    plain = WCS(sip.copy()); plain.sip = None
    assert plain.pixel_to_world(x.ravel(), y.ravel()).separation(a).to_value("arcsec").max() > 1
    assert sep.max() < 1.0


def test_real_decam_distortion_via_fitted_sip():
    """Fit SIP to the real TPV WCS of a DECam CCD, convert back, compare."""
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "decam" / "raw_headers"
    path = shared / "DECam_00200666_headers_only.fits"
    if not path.exists():
        pytest.skip("needs ../shared/data (real DECam headers)")
    hdr = fits.getheader(path, 1)
    truth = WCS(hdr)
    y, x = np.mgrid[51:4146:40j, 57:2104:20j]
    sky = truth.pixel_to_world(x.ravel(), y.ravel())
    sip = fit_wcs_from_points((x.ravel(), y.ravel()), sky, sip_degree=4).to_header(relax=True)
    tpv = WCS(sip_to_tpv(sip))
    sip_w = WCS(sip)
    sep = sip_w.pixel_to_world(x.ravel(), y.ravel()).separation(tpv.pixel_to_world(x.ravel(), y.ravel()))
    assert sep.to_value("mas").max() < 1.0


def test_cli_converts_in_place_and_rejects_non_sip(tmp_path, capsys):
    f = tmp_path / "hsc.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.float32), header=_sip_header(3)).writeto(f)
    assert main(["wcs", "convert", str(f)]) == 0
    assert fits.getheader(f)["CTYPE1"] == "RA---TPV"
    assert main(["wcs", "convert", str(f)]) == 2  # no SIP left
    assert "no HDU with a SIP WCS" in capsys.readouterr().err
    with pytest.raises(DwfError):
        sip_to_tpv(fits.Header({"CTYPE1": "RA---TPV", "CTYPE2": "DEC--TPV"}))
