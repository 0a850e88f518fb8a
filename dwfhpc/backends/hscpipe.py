"""hscPipe (the HSC/LSST science pipeline) as the calibration step, inside its image.

Per task, a private butler repository in scratch (``_mapper`` = HscMapper; ``CALIB`` and
``ref_cats`` linked read-only from ``node.hscpipe_repo`` when configured), then
``ingestImages.py <repo> <raw> --mode=link`` and
``processCcd.py <repo> --rerun <rerun> --id visit=<v> ccd=<c> --configfile <cfg>``.
The config defaults to the shipped minimal ``processCcd_dwf.py`` (copied into scratch so the
image sees it). The calibrated exposure (``CORR-<visit>-<ccd>.fits``: image HDU 1, mask HDU 2)
becomes the four dwfhpc products.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from ..errors import DwfError
from ..instruments import instrument_for
from . import BackendJob
from .apptainer import bind_spec
from .products import products_from_backend

MAPPER = "lsst.obs.hsc.HscMapper\n"
SHARED_REPO_ENTRIES = ("CALIB", "ref_cats")


def default_config() -> Path:
    return Path(str(resources.files("dwfhpc.backends") / "processCcd_dwf.py"))


def _fmt(template: str, values: dict) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise DwfError(f"hscpipe setting {template!r}: unknown placeholder ({exc})") from None


def hscpipe_job(spec, ccd: int, raw: Path, scratch: Path, out_dir: Path, *, pixel_scale: float) -> BackendJob:
    repo = scratch / "hscrepo"
    repo.mkdir()
    (repo / "_mapper").write_text(MAPPER)
    binds: list[str] = []
    shared = spec.option("hscpipe_repo")
    if shared:
        shared = Path(shared)
        if not shared.is_dir():
            raise DwfError("hscpipe_repo is not a folder", shared)
        binds.append(bind_spec(shared, read_only=True))
        for name in SHARED_REPO_ENTRIES:
            if (shared / name).exists():
                (repo / name).symlink_to(shared / name)
    elif spec.require_masters:
        raise DwfError("hscpipe needs node.hscpipe_repo (its CALIB holds the master bias and flats)")
    rawdir = scratch / "hscraw"
    rawdir.mkdir()
    visit = spec.expnum
    raw_in = rawdir / instrument_for("hsc").raw_ccd_filename(visit, ccd)
    os.replace(raw, raw_in)
    config_src = Path(spec.option("hscpipe_config") or default_config())
    if not config_src.is_file():
        raise DwfError("processCcd config file is missing", config_src)
    config = scratch / config_src.name
    shutil.copyfile(config_src, config)
    rerun = spec.option("hscpipe_rerun")
    values = {"repo": str(repo), "raw": str(raw_in), "rerun": rerun, "visit": visit, "ccd": ccd, "config": str(config),
              "filter": spec.filter, "night": spec.night}
    ingest = [_fmt(a, values) for a in spec.option("hscpipe_ingest")]
    process = [_fmt(a, values) for a in spec.option("hscpipe_command")]
    patterns = {k: _fmt(v, values) for k, v in spec.option("hscpipe_outputs").items()}

    def collect():
        found = sorted(repo.glob(patterns["cal"])) if "cal" in patterns else []
        if not found:
            raise DwfError(f"processCcd wrote no calibrated exposure matching {patterns.get('cal')}", repo)
        return products_from_backend(found[0], out_dir, expid=spec.expid, ccd=ccd, pixel_scale=pixel_scale,
                                     backend="hscpipe", mask=found[0], image_hdu=1, mask_hdu=2, qlevel=spec.qlevel,
                                     extra_qa={"hscpipe_image": found[0].name, "rerun": rerun})

    return BackendJob(name="hscpipe", commands=[("ingestImages", ingest), ("processCcd", process)], collect=collect,
                      binds=binds, pwd=scratch)
