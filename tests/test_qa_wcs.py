"""QA and the WCS check on real DECam pixels (Community Pipeline cutouts) against real Gaia stars."""

import numpy as np
import pytest
from astropy.io import fits

from dwfhpc.calibrate.qa import measure_qa
from dwfhpc.calibrate.wcs import check_wcs

pytestmark = pytest.mark.shared


def _cutout(shared_data):
    case = shared_data / "decam" / "cp_cutouts" / "testcase4"
    image = next(case.glob("images/**/*_ooi_*.fits"))
    dq = next(case.glob("images/**/*_ood_*.fits"))
    with fits.open(image) as hdul:
        data, header = hdul[1].data.astype(np.float32), fits.Header(hdul[0].header)
        header.update(hdul[1].header)
    mask = (fits.getdata(dq, 1) != 0).astype(np.uint8)
    return data, mask, header, sorted(case.glob("gaia/*.fits"))


def test_qa_on_real_pixels_is_sane(shared_data):
    data, mask, header, _ = _cutout(shared_data)
    qa, det = measure_qa(data, mask, pixel_scale=0.263, saturate=None)
    assert np.isfinite(qa["sky"]) and 0 < qa["sky_noise"] < 1e3
    assert qa["n_sources"] >= 3
    # CP20170315 z band: seeing on the night was around an arcsecond
    assert qa["fwhm_arcsec"] is not None and 0.6 < qa["fwhm_arcsec"] < 2.5


def test_wcs_check_finds_the_gaia_stars(shared_data):
    data, mask, header, gaia = _cutout(shared_data)
    _, det = measure_qa(data, mask, pixel_scale=0.263, saturate=None)
    o = det.sources
    result = check_wcs(o["x"], o["y"], header, gaia, min_matches=3, search=10.0)
    assert result.status == "ok" and result.n_match >= 3
    assert np.hypot(result.dx, result.dy) < 0.3 and result.rms < 0.3
    # and a 10" error in the header is measured as such
    shifted = header.copy()
    shifted["CRVAL1"] += 10.0 / 3600.0 / np.cos(np.radians(header["CRVAL2"]))
    moved = check_wcs(o["x"], o["y"], shifted, gaia, min_matches=3, search=20.0)
    assert moved.status == "ok" and abs(moved.dx + 10.0) < 0.3
