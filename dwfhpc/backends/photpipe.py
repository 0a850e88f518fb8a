"""photpipe (the DWF difference-imaging pipeline) as the calibration step, inside its image.

Per task, a private photpipe data root in scratch mirrors the site's photpipe root (its
entries linked, read-only) with its own ``rawdata`` and ``workspace``:

    rawdata/ut<YYMMDD>/<ccd>/<field>.<f>.ut<YYMMDD>.<expnum>_<ccd>.fits     the science CCD
    rawdata/ut<YYMMDD>/<ccd>/bias.ut<YYMMDD>.<expnum>_<ccd>.fits            the night's biases
    rawdata/ut<YYMMDD>/<ccd>/domeflat.<f>.ut<YYMMDD>.<expnum>_<ccd>.fits    and dome flats

(linked from the calibration library; photpipe builds its own masters from them), then
``pipeloop.pl -red ut<YYMMDD> <ccd> -id <expnum> -redobad`` (``node.photpipe_command``).
YYMMDD is the observing night's date, ``<ccd>`` two digits.
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path

from ..errors import DwfError
from ..layout import library_path
from . import BackendJob
from .apptainer import bind_spec
from .products import products_from_backend

RESERVED = ("rawdata", "workspace")


def ut_night(night: str) -> str:
    """``2017-11-12`` -> ``ut171112``."""
    try:
        return "ut" + date.fromisoformat(night).strftime("%y%m%d")
    except ValueError:
        raise DwfError(f"night {night!r} is not YYYY-MM-DD") from None


def _word(text: str) -> str:
    """A file-name word photpipe can split on dots: anything but letters, digits, + - _ becomes _."""
    return re.sub(r"[^A-Za-z0-9+\-_]", "_", text) or "none"


def ccd_word(ccd: int) -> str:
    return f"{ccd:02d}"


def raw_name(field: str, filter_: str, night: str, expnum: int, ccd: int) -> str:
    return f"{_word(field)}.{_word(filter_)}.{ut_night(night)}.{expnum}_{ccd_word(ccd)}.fits"


def bias_name(night: str, expnum: int, ccd: int) -> str:
    return f"bias.{ut_night(night)}.{expnum}_{ccd_word(ccd)}.fits"


def domeflat_name(filter_: str, night: str, expnum: int, ccd: int) -> str:
    return f"domeflat.{_word(filter_)}.{ut_night(night)}.{expnum}_{ccd_word(ccd)}.fits"


def _expnum_of(path: Path) -> int:
    m = re.search(r"(\d+)_\d+\.fits$", path.name)
    if not m:
        raise DwfError("calibration frame name does not end in <expnum>_<ccd>.fits", path)
    return int(m.group(1))


def calibration_frames(library: str | Path, night: str, ccd: int, filter_: str) -> tuple[list[Path], list[Path]]:
    """(biases, dome flats in ``filter_``) filed in the library for ``night`` and ``ccd``."""
    bias_dir = library_path(Path(library), night, ccd, "bias", "", "x").parent
    flat_dir = library_path(Path(library), night, ccd, "flat", filter_, "x").parent
    return sorted(bias_dir.glob("*.fits")), sorted(flat_dir.glob("*.fits"))


def _fmt(template: str, values: dict) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise DwfError(f"photpipe setting {template!r}: unknown placeholder ({exc})") from None


def photpipe_job(spec, ccd: int, raw: Path, scratch: Path, out_dir: Path, *, pixel_scale: float) -> BackendJob:
    """Lay out photpipe's data root in ``scratch`` and return the job (the staged raw is moved in)."""
    ut, word = ut_night(spec.night), ccd_word(ccd)
    root = scratch / "photpipe"
    rawdir = root / "rawdata" / ut / word
    rawdir.mkdir(parents=True)
    (root / "workspace").mkdir()
    binds: list[str] = []
    site_root = spec.option("photpipe_root")
    if site_root:
        site_root = Path(site_root)
        if not site_root.is_dir():
            raise DwfError("photpipe_root is not a folder", site_root)
        binds.append(bind_spec(site_root, read_only=True))
        for entry in sorted(site_root.iterdir()):
            if entry.name not in RESERVED:
                (root / entry.name).symlink_to(entry)
    science = rawdir / raw_name(spec.field, spec.filter, spec.night, spec.expnum, ccd)
    os.replace(raw, science)
    biases, flats = calibration_frames(spec.library, spec.night, ccd, spec.filter)
    if spec.require_masters and not (biases and flats):
        kind = "bias" if not biases else f"dome flat ({spec.filter})"
        raise DwfError(f"no {kind} frames for night {spec.night} CCD {ccd} in the calibration library "
                       f"(photpipe builds its own masters from them)", spec.library)
    for f in biases:
        (rawdir / bias_name(spec.night, _expnum_of(f), ccd)).symlink_to(f)
    for f in flats:
        (rawdir / domeflat_name(spec.filter, spec.night, _expnum_of(f), ccd)).symlink_to(f)
    if biases or flats:
        binds.append(bind_spec(Path(spec.library) / spec.night, read_only=True))
    values = {"ut": ut, "ccd": word, "expnum": spec.expnum, "night": spec.night, "filter": spec.filter,
              "field": _word(spec.field), "root": str(root), "stem": science.name[: -len(".fits")]}
    command = [_fmt(a, values) for a in spec.option("photpipe_command")]
    env = {k: _fmt(v, values) for k, v in spec.option("photpipe_env").items()}
    outputs = {k: root / _fmt(v, values) for k, v in spec.option("photpipe_outputs").items()}

    def collect():
        cal = outputs.get("cal")
        if cal is None or not cal.is_file():
            raise DwfError("photpipe wrote no calibrated image", cal or root)
        mask = outputs.get("mask")
        return products_from_backend(cal, out_dir, expid=spec.expid, ccd=ccd, pixel_scale=pixel_scale,
                                     backend="photpipe", mask=mask if mask and mask.is_file() else None,
                                     qlevel=spec.qlevel, extra_qa={"photpipe_image": cal.name})

    return BackendJob(name="photpipe", commands=[("pipeloop", command)], collect=collect, binds=binds, env=env,
                      pwd=root)
