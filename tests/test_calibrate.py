"""The embedded calibrator against ccdproc, on north and south DECam layouts; masters; bad input."""

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.wcs import WCS

from dwfhpc.calibrate import build_master, calibrate_array, calibrate_file, find_master, read_master
from dwfhpc.calibrate.amplifiers import overscan_columns
from dwfhpc.cli import main
from dwfhpc.errors import DwfError, FitsFormatError
from dwfhpc.instruments import DECam
from dwfhpc.parts import pack_exposure, unpack_part
from dwfhpc.simulate import simulate_decam_exposure

SOUTH, NORTH = 25, 32


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Per-CCD raw files (as node jobs see them) of 2 biases, 2 flats and 2 science exposures."""
    root = tmp_path_factory.mktemp("cal")
    plan = [("zero", 1), ("zero", 2), ("dome flat", 3), ("dome flat", 4), ("object", 5), ("object", 6)]
    files: dict[tuple[int, int], Path] = {}
    for obstype, expnum in plan:
        offset = (10.0, 0.0) if expnum == 6 else (0.0, 0.0)
        raw = simulate_decam_exposure(root / "raw", expnum=expnum, obstype=obstype, ccds=[SOUTH, NORTH], seed=expnum,
                                      wcs_offset_arcsec=offset, catalog_out=root / "refcat.fits" if expnum == 5 else None)
        for part in pack_exposure(raw, root / "parts", codec="rice", parts=1, jobs=1):
            for f in unpack_part(part.tar, root / "ccd"):
                files[(expnum, fits.getheader(f)["CCDNUM"])] = f
    masters = root / "masters" / "2026-11-24"
    for ccd in (SOUTH, NORTH):
        bias = build_master("bias", [files[(1, ccd)], files[(2, ccd)]], masters / f"bias_{ccd:02d}.fits")
        build_master("flat", [files[(3, ccd)], files[(4, ccd)]], masters / f"flat_g_{ccd:02d}.fits", bias=bias)
    return root, files


def _ccdproc_reference(raw_path: Path, bias: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """The same steps with ccdproc: per amp overscan (row median) + trim, then bias and flat."""
    import ccdproc

    header = fits.getheader(raw_path)
    geometry = DECam().geometry(header)
    pixels = fits.getdata(raw_path).astype(np.float32)
    out = np.empty(geometry.trimmed_shape, np.float32)
    for amp in geometry.amps:
        rows, data_cols = amp.data.slices
        band = CCDData(pixels[rows, :], unit="adu")  # the amplifier's data rows, full width
        cols = overscan_columns(amp)
        nrows = rows.stop - rows.start
        corrected = ccdproc.subtract_overscan(band, fits_section=f"[{cols.start + 1}:{cols.stop},1:{nrows}]",
                                              median=True, overscan_axis=1)
        trimmed = ccdproc.trim_image(corrected, fits_section=f"[{data_cols.start + 1}:{data_cols.stop},1:{nrows}]")
        block = trimmed.data
        if amp.data.x_reversed != amp.ccd.x_reversed:
            block = block[:, ::-1]
        if amp.data.y_reversed != amp.ccd.y_reversed:
            block = block[::-1, :]
        out[amp.ccd.slices] = block
    ccd = CCDData(out, unit="adu")
    ccd = ccdproc.subtract_bias(ccd, CCDData(bias, unit="adu"))
    ccd = ccdproc.flat_correct(ccd, CCDData(flat, unit="adu"), norm_value=1.0)
    return np.asarray(ccd.data, np.float32)


@pytest.mark.parametrize("ccd", [SOUTH, NORTH])
def test_embedded_agrees_with_ccdproc(frames, ccd):
    root, files = frames
    masters = root / "masters" / "2026-11-24"
    bias, _ = read_master(masters / f"bias_{ccd:02d}.fits")
    flat, _ = read_master(masters / f"flat_g_{ccd:02d}.fits")
    raw_path = files[(5, ccd)]
    header = fits.getheader(raw_path)
    image, mask = calibrate_array(fits.getdata(raw_path), header, DECam(), bias=bias, flat=flat)
    reference = _ccdproc_reference(raw_path, bias, flat)
    good = mask == 0
    assert good.mean() > 0.9
    rel = np.abs(image[good] - reference[good]) / np.maximum(np.abs(reference[good]), 1.0)
    assert rel.max() < 1e-5


def test_masters_are_normalised_and_found_nearest_in_time(frames, tmp_path):
    root, _ = frames
    masters = root / "masters"
    flat, header = read_master(masters / "2026-11-24" / f"flat_g_{SOUTH:02d}.fits")
    assert abs(np.median(flat) - 1) < 1e-6 and header["NCOMBINE"] == 2
    bias, _ = read_master(masters / "2026-11-24" / f"bias_{SOUTH:02d}.fits")
    assert abs(np.median(bias)) < 2  # overscan-corrected bias is ~0
    assert find_master(masters, "flat", "2026-11-30", SOUTH, "g") == masters / "2026-11-24" / f"flat_g_{SOUTH:02d}.fits"
    assert find_master(masters, "flat", "2026-11-24", SOUTH, "r") is None


def test_products_qa_and_wcs_check(frames, tmp_path):
    root, files = frames
    out = calibrate_file(files[(5, NORTH)], tmp_path, bias=find_master(root / "masters", "bias", "2026-11-24", NORTH),
                         flat=find_master(root / "masters", "flat", "2026-11-24", NORTH, "g"),
                         bpm=Path(__file__).resolve().parents[1] / "dwfhpc" / "data" / "bpm_decam",
                         refcat=root / "refcat.fits")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in out.products.values())
    assert abs(out.qa["fwhm_arcsec"] - 1.2) < 0.1  # the simulated seeing
    assert out.qa["n_stars"] > 20 and 0 <= out.qa["ellipticity"] < 0.1
    assert out.wcs["status"] == "ok" and out.wcs["rms"] < 0.2 and abs(out.wcs["dx"]) < 0.1
    with fits.open(out.products["cal"]) as hdul:
        assert hdul[1].data.shape == (4096, 2048) and hdul[1].data.dtype.kind == "f"
    with fits.open(out.products["mask"]) as hdul:
        mask = hdul[1].data
        assert hdul[1].header["MASKB0"] == 1 and (mask & 1).any()  # real BPM boxes applied


def test_injected_wcs_offset_is_repaired(frames, tmp_path):
    root, files = frames
    raw = files[(6, SOUTH)]  # written WCS is 10" east of the truth
    out = calibrate_file(raw, tmp_path, bias=None, flat=None, refcat=root / "refcat.fits")
    assert out.wcs["status"] == "ok" and abs(out.wcs["dx"] + 10.0) < 0.5
    repaired = fits.getheader(out.products["cal"], 1)
    true_header = repaired.copy()
    from dwfhpc.calibrate.calibrator import trimmed_header
    truth = trimmed_header(fits.getheader(raw), DECam().geometry(fits.getheader(raw)))
    truth["CRVAL1"] -= 10.0 / 3600.0 / np.cos(np.radians(truth["CRVAL2"]))
    y, x = np.mgrid[0:4096:512, 0:2048:512]
    a = WCS(repaired).pixel_to_world(x.ravel(), y.ravel())
    b = WCS(truth).pixel_to_world(x.ravel(), y.ravel())
    assert a.separation(b).arcsec.max() < 0.2
    del true_header


def test_missing_sections_and_masters_are_clear_errors(frames, tmp_path, capsys):
    root, files = frames
    broken = tmp_path / "broken.fits"
    with fits.open(files[(5, SOUTH)]) as hdul:
        del hdul[0].header["BIASSECA"]
        hdul.writeto(broken)
    out = tmp_path / "out"
    with pytest.raises(FitsFormatError, match="BIASSECA"):
        calibrate_file(broken, out)
    with pytest.raises(DwfError, match="master calibration file is missing"):
        calibrate_file(files[(5, SOUTH)], out, bias=tmp_path / "nope.fits")
    assert not out.exists() or not any(out.iterdir())
    assert main(["calibrate", str(files[(5, SOUTH)]), "--bias", str(tmp_path / "empty"), "--no-flat", "--out", str(out)]) == 2
    assert "master bias is missing" in capsys.readouterr().err


def test_cals_build_night_and_copy_between_nights(tmp_path, capsys):
    """File frames in the library layout, build the night's masters, copy them to a night without any."""
    from dwfhpc.layout import library_path

    site_dir = tmp_path / "site"
    library = site_dir / "cluster" / "calibs"
    for expnum, obstype, kind in ((1, "zero", "bias"), (2, "zero", "bias"), (3, "dome flat", "flat")):
        raw = simulate_decam_exposure(tmp_path / "raw", expnum=expnum, obstype=obstype, ccds=[NORTH], seed=expnum)
        part = pack_exposure(raw, tmp_path / "parts", codec="rice", parts=1, jobs=1)[0]
        ccd_file = unpack_part(part.tar, tmp_path / "ccd")[-1]
        target = library_path(library, "2026-11-24", NORTH, kind, "g", f"DECam_{expnum:08d}")
        target.parent.mkdir(parents=True, exist_ok=True)
        ccd_file.rename(target)
    assert main(["cals", "build", "--night", "2026-11-24", "--workdir", str(site_dir)]) == 0
    masters = site_dir / "cluster" / "masters"
    assert sorted(p.name for p in (masters / "2026-11-24").iterdir()) == [f"bias_{NORTH}.fits", f"flat_g_{NORTH}.fits"]
    assert fits.getheader(masters / "2026-11-24" / f"bias_{NORTH}.fits")["NCOMBINE"] == 2
    assert main(["cals", "copy", "--from", "2026-11-24", "--to", "2026-11-25", "--workdir", str(site_dir)]) == 0
    copied = masters / "2026-11-25" / f"flat_g_{NORTH}.fits"
    assert fits.getheader(copied)["COPIEDFR"] == "2026-11-24"
    assert np.array_equal(fits.getdata(copied), fits.getdata(masters / "2026-11-24" / f"flat_g_{NORTH}.fits"))
    assert main(["cals", "copy", "--from", "2026-01-01", "--to", "2026-11-25", "--workdir", str(site_dir)]) == 2
    assert "no masters for night 2026-01-01" in capsys.readouterr().err


def test_hsc_ccd_calibrates_from_its_channel_keywords(tmp_path):
    from dwfhpc.instruments import HSC
    from dwfhpc.simulate import simulate_hsc_visit

    raw = simulate_hsc_visit(tmp_path, visit=1000, ccds=[23], seed=1)[0]
    header = fits.getheader(raw)
    image, mask = calibrate_array(fits.getdata(raw), header, HSC())
    assert image.shape == (4176, 2048)  # four 512-column channels, overscan removed
    channel_levels = [np.median(image[:, i * 512:(i + 1) * 512]) for i in range(4)]
    # each channel had its own bias level; after overscan subtraction only the sky remains, equal in all four
    assert max(channel_levels) - min(channel_levels) < 0.1 * np.mean(channel_levels)
    out = calibrate_file(raw, tmp_path / "out")
    assert out.qa["pixel_scale"] == 0.168 and out.products["cal"].name == "HSC_0001000_23.cal.fits.fz"
