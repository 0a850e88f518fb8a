"""Backends: the apptainer command lines, and photpipe / hscpipe / dwfhpc-in-image node tasks.

Apptainer, photpipe and hscPipe are not installed here (engineer G's tests run the real
``apptainer exec``; photpipe is not public and hscPipe needs its multi-GB stack). So these tests
put STAND-IN executables on PATH, written below: a stand-in ``apptainer`` that records its argv,
refuses any absolute path in the command that is not inside a ``--bind``, applies ``--env`` and
``--pwd`` and runs the command on the host; and stand-ins for ``pipeloop.pl``, ``ingestImages.py``
and ``processCcd.py`` that record their argv, cwd and inputs and write an output file shaped like
the real pipeline's. What is checked is real: the exact command lines, the binds, the file layout
the pipelines see, and the four products the node task copies back from their outputs. The part
tarballs, staging, calibration frames and products are real files.
"""

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from dwfhpc.backends.apptainer import bind_spec, exec_argv
from dwfhpc.backends.photpipe import bias_name, domeflat_name, raw_name, ut_night
from dwfhpc.calibrate import build_night_masters
from dwfhpc.config import load_site
from dwfhpc.errors import DwfError
from dwfhpc.layout import product_paths
from dwfhpc.node import TaskSpec, run_task
from dwfhpc.parts import pack_exposure
from dwfhpc.simulate import simulate_decam_exposure, simulate_hsc_visit

CCD = 25
NIGHT = "2026-11-24"
PY = sys.executable

FAKE_APPTAINER = f"""#!{PY}
# STAND-IN for `apptainer exec` (apptainer is not installed here): records argv, checks binds, runs on the host.
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({{"tool": "apptainer", "argv": args}}) + "\\n")
assert args[0] == "exec", args
i, env, pwd, binds = 1, dict(os.environ), None, []
while args[i].startswith("--"):
    if args[i] == "--cleanenv":
        i += 1
        continue
    opt, val = args[i], args[i + 1]
    i += 2
    if opt == "--env":
        k, v = val.split("=", 1)
        env[k] = v
    elif opt == "--pwd":
        pwd = val
    elif opt == "--bind":
        binds += [b.split(":")[0] for b in val.split(",")]
image, cmd = args[i], args[i + 1:]
for a in cmd + ([pwd] if pwd else []):
    for p in a.split("=")[-1:]:
        if p.startswith("/") and not any(p == b or p.startswith(b + "/") for b in binds):
            sys.exit(f"stand-in apptainer: {{p}} is not bound into the container")
if pwd:
    os.chdir(pwd)
os.execvpe(cmd[0], cmd, env)
"""

FAKE_PIPELOOP = f"""#!{PY}
# STAND-IN for photpipe's pipeloop.pl: records what it sees, writes <stem>.sw.fits and .sw.mask.fits.
import json, os, sys
from pathlib import Path
import numpy as np
from astropy.io import fits
argv = sys.argv[1:]
ut, ccd, expnum = argv[1], argv[2], argv[4]
data = Path(os.environ["PIPE_DATA"])
rawdir = data / "rawdata" / ut / ccd
names = sorted(p.name for p in rawdir.iterdir())
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({{"tool": "pipeloop.pl", "argv": argv, "cwd": os.getcwd(), "PIPE_DATA": str(data),
                        "rawdata": names, "links": [os.path.islink(rawdir / n) for n in names],
                        "root": sorted(p.name for p in data.iterdir())}}) + "\\n")
if os.environ.get("FAKE_FAIL"):
    print("pipeloop: cannot find photpipe config for this night"); sys.exit(3)
science = [n for n in names if not n.startswith(("bias.", "domeflat."))][0]
with fits.open(rawdir / science) as h:
    raw = h[0].data.astype(np.float32); header = h[0].header
image = raw[50:4146 - 50, 56:2160 - 56] - np.median(raw[:, 2:50])
out = data / "workspace" / ut / ccd
out.mkdir(parents=True, exist_ok=True)
stem = science[:-len(".fits")]
fits.PrimaryHDU(image, header=header).writeto(out / (stem + ".sw.fits"))
mask = np.zeros(image.shape, np.int16); mask[100:110, :] = 4
fits.PrimaryHDU(mask).writeto(out / (stem + ".sw.mask.fits"))
"""

FAKE_INGEST = f"""#!{PY}
# STAND-IN for hscPipe's ingestImages.py: records argv, links the raw file into the repository.
import json, os, sys
from pathlib import Path
repo, raw = Path(sys.argv[1]), Path(sys.argv[2])
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({{"tool": "ingestImages.py", "argv": sys.argv[1:], "cwd": os.getcwd(),
                        "mapper": (repo / "_mapper").read_text(), "repo": sorted(p.name for p in repo.iterdir())}}) + "\\n")
(repo / "raw").mkdir(exist_ok=True)
(repo / "raw" / raw.name).symlink_to(raw)
"""

FAKE_PROCESSCCD = f"""#!{PY}
# STAND-IN for hscPipe's processCcd.py: records argv, writes rerun/<rerun>/<field>/<filter>/corr/CORR-<v>-<c>.fits.
import json, os, sys
from pathlib import Path
import numpy as np
from astropy.io import fits
argv = sys.argv[1:]
repo = Path(argv[0]); rerun = argv[argv.index("--rerun") + 1]
ident = dict(a.split("=") for a in argv if a.startswith(("visit=", "ccd=")))
config = argv[argv.index("--configfile") + 1]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({{"tool": "processCcd.py", "argv": argv, "config_text": Path(config).read_text()}}) + "\\n")
raw = next((repo / "raw").iterdir())
with fits.open(raw) as h:
    data = h[0].data.astype(np.float32); header = h[0].header
out = repo / "rerun" / rerun / "DWF" / "HSC-R" / "corr"
out.mkdir(parents=True)
image = data[:4096, :2048] - np.median(data)
mask = np.zeros(image.shape, np.int32); mask[:, :3] = 1 << 16
fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, header=header), fits.ImageHDU(mask),
              fits.ImageHDU(np.ones_like(image))]).writeto(out / f"CORR-{{int(ident['visit']):07d}}-{{int(ident['ccd']):03d}}.fits")
"""


# --------------------------------------------------------------------------- pure command lines
def test_exec_argv_is_an_exact_list():
    argv = exec_argv("/img/photpipe.sif", ["pipeloop.pl", "-red", "ut261124", "25"],
                     binds=["/scratch/t1", "/products", "/calibs/2026-11-24:/calibs/2026-11-24:ro", "/products"],
                     env={"PIPE_DATA": "/scratch/t1/photpipe"}, pwd="/scratch/t1/photpipe")
    assert argv == ["apptainer", "exec", "--bind", "/scratch/t1,/products,/calibs/2026-11-24:/calibs/2026-11-24:ro",
                    "--env", "PIPE_DATA=/scratch/t1/photpipe", "--pwd", "/scratch/t1/photpipe", "/img/photpipe.sif",
                    "pipeloop.pl", "-red", "ut261124", "25"]
    assert exec_argv("x.sif", ["true"], apptainer="singularity") == ["singularity", "exec", "x.sif", "true"]


def test_bind_paths_that_would_be_misparsed_are_refused():
    assert bind_spec("/a/b", read_only=True) == "/a/b:/a/b:ro"
    for bad in ("relative/path", "/a,b", "/a:b"):
        with pytest.raises(DwfError):
            bind_spec(bad)
    with pytest.raises(DwfError, match="','"):
        exec_argv("x.sif", ["true"], binds=["/a,/b"])
    with pytest.raises(DwfError):
        exec_argv("x.sif", ["true"], env={"A": "x,y"})
    # a read-only bind of a folder also bound read-write is dropped (read-write wins)
    assert exec_argv("x.sif", ["true"], binds=["/s", "/s:/s:ro"])[3] == "/s"


def test_photpipe_names():
    assert ut_night("2017-11-12") == "ut171112"
    assert raw_name("DWF_150.000+02.200", "g", "2017-11-12", 667543, 5) == "DWF_150_000+02_200.g.ut171112.667543_05.fits"
    assert bias_name("2017-11-12", 667500, 25) == "bias.ut171112.667500_25.fits"
    assert domeflat_name("g", "2017-11-12", 667510, 25) == "domeflat.g.ut171112.667510_25.fits"


# --------------------------------------------------------------------------- node tasks through stand-ins
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Stand-in executables on PATH, a local site, bias/flat filed in the library, masters, a science part."""
    root = tmp_path_factory.mktemp("backends")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name, text in (("apptainer", FAKE_APPTAINER), ("pipeloop.pl", FAKE_PIPELOOP),
                       ("ingestImages.py", FAKE_INGEST), ("processCcd.py", FAKE_PROCESSCCD)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755 | stat.S_IXUSR)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{old_path}"
    (root / "scratch").mkdir()
    (root / "images").mkdir()
    (root / "images" / "base.sif").write_bytes(b"stand-in image")
    site = load_site("local", workdir=root, overrides={"node": {"scratch_vars": [], "scratch_fallback": str(root / "scratch"),
                                                                 "min_free_gb": 0.01, "image": str(root / "images" / "base.sif")}})
    parts = {}
    for expnum, obstype in ((11, "zero"), (12, "dome flat"), (13, "object")):
        raw = simulate_decam_exposure(root / "raw", expnum=expnum, obstype=obstype, ccds=[CCD], seed=expnum, jobs=1)
        parts[obstype] = pack_exposure(raw, root / "parts", codec="rice", parts=1, jobs=1)[0]
    for obstype in ("zero", "dome flat"):
        assert run_task(_spec(site, parts[obstype], obstype.replace(" ", "")), 0)["status"] == "ok"
    build_night_masters(site.path(site.calibration.library), site.path(site.calibration.masters), NIGHT,
                        progress=lambda line: None)
    yield root, site, parts
    os.environ["PATH"] = old_path


def _spec(site, part, name, **overrides) -> Path:
    return TaskSpec.from_site(site, part.manifest, part.tar, **overrides).write(site.path(site.ingest.specs) / f"{name}.json")


def _log(tmp_path) -> list[dict]:
    log = tmp_path / "fake.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def fake_log(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "fake.log"))
    return tmp_path


def _products(tmp_path) -> list[Path]:
    return sorted(p for p in (tmp_path / "products").rglob("*") if p.is_file()) if (tmp_path / "products").exists() else []


def test_photpipe_task_lays_out_rawdata_runs_pipeloop_in_the_image_and_copies_back_products(world, fake_log):
    root, site, parts = world
    tmp_path = fake_log
    photpipe_root = root / "photpipe-site"
    (photpipe_root / "config").mkdir(parents=True, exist_ok=True)
    spec = _spec(site, parts["object"], "photpipe", backend="photpipe", products=str(tmp_path / "products"),
                 backend_options={"photpipe_root": str(photpipe_root)})
    result = run_task(spec, 0)
    assert result["status"] == "ok", result["error"]
    apptainer, pipeloop = _log(tmp_path)
    scratch = result["scratch"]
    data_root = f"{scratch}/photpipe"
    argv = apptainer["argv"]
    binds = argv[argv.index("--bind") + 1].split(",")
    assert binds[:2] == [scratch, str(tmp_path / "products")]
    assert f"{photpipe_root}:{photpipe_root}:ro" in binds
    library_night = str(site.path(site.calibration.library) / NIGHT)
    assert f"{library_night}:{library_night}:ro" in binds
    assert argv[argv.index("--env") + 1] == f"PIPE_DATA={data_root}"
    assert argv[argv.index("--pwd") + 1] == data_root
    assert argv[argv.index("--pwd") + 2] == str(root / "images" / "base.sif")
    assert pipeloop["argv"] == ["-red", "ut261124", "25", "-id", "13", "-redobad"]
    assert pipeloop["cwd"] == data_root and pipeloop["PIPE_DATA"] == data_root
    assert pipeloop["rawdata"] == ["DWF_150_000+02_200.g.ut261124.13_25.fits", "bias.ut261124.11_25.fits",
                                   "domeflat.g.ut261124.12_25.fits"]
    assert pipeloop["links"] == [False, True, True]  # calibration frames are linked from the library
    assert pipeloop["root"] == ["config", "rawdata", "workspace"]
    targets = product_paths(tmp_path / "products", NIGHT, "DECam_00000013", CCD)
    assert _products(tmp_path) == sorted(targets.values())
    assert fits.getheader(targets["cal"], 1)["DWFCAL"] == "photpipe via dwfhpc"
    mask = fits.getdata(targets["mask"], 1)
    assert mask[105].all() and not mask[200].any()
    assert result["qa"]["backend"] == "photpipe" and result["qa"]["n_sources"] > 0
    assert not any((root / "scratch").iterdir())


def test_photpipe_failure_is_a_failed_result_with_its_output_and_nothing_in_products(world, fake_log, monkeypatch):
    root, site, parts = world
    monkeypatch.setenv("FAKE_FAIL", "1")
    spec = _spec(site, parts["object"], "photpipe-fail", backend="photpipe", products=str(fake_log / "products"))
    result = run_task(spec, 0)
    assert result["status"] == "failed"
    assert "photpipe pipeloop failed (exit 3): pipeloop: cannot find photpipe config" in result["error"]
    assert _products(fake_log) == [] and not any((root / "scratch").iterdir())


def test_photpipe_without_the_nights_bias_frames_fails_with_the_reason(world, fake_log):
    root, site, parts = world
    spec = _spec(site, parts["object"], "photpipe-nobias", backend="photpipe", products=str(fake_log / "products"),
                 library=str(fake_log / "empty-library"))
    result = run_task(spec, 0)
    assert result["status"] == "failed" and f"no bias frames for night {NIGHT} CCD 25" in result["error"]
    assert _log(fake_log) == []  # nothing was run


def test_external_backend_without_an_image_is_a_clear_failure(world, fake_log):
    root, site, parts = world
    spec = _spec(site, parts["object"], "noimage", backend="photpipe", image=None, products=str(fake_log / "products"))
    result = run_task(spec, 0)
    assert result["status"] == "failed" and "set node.image" in result["error"]


def test_embedded_calibration_in_the_image_matches_the_host_run(world, fake_log):
    """``container: true`` runs ``dwfhpc calibrate`` through (stand-in) apptainer exec: same products as on the host."""
    root, site, parts = world
    host = run_task(_spec(site, parts["object"], "host", products=str(fake_log / "host")), 0)
    assert host["status"] == "ok", host["error"]
    boxed = run_task(_spec(site, parts["object"], "boxed", container=True, products=str(fake_log / "products")), 0)
    assert boxed["status"] == "ok", boxed["error"]
    (call,) = _log(fake_log)
    argv = call["argv"]
    image_at = argv.index(str(root / "images" / "base.sif"))
    cmd = argv[image_at + 1:]
    masters = site.path(site.calibration.masters) / NIGHT
    assert cmd == ["dwfhpc", "calibrate", f"{boxed['scratch']}/DECam_00000013_25.fits", "--ccd", "25",
                   "--out", f"{boxed['scratch']}/out", "--bias", str(masters / "bias_25.fits"),
                   "--flat", str(masters / "flat_g_25.fits")]
    assert argv[argv.index("--bind") + 1] == f"{boxed['scratch']},{fake_log / 'products'},{masters}:{masters}:ro"
    a = fits.getdata(host["products"]["cal"], 1)
    b = fits.getdata(boxed["products"]["cal"], 1)
    assert np.array_equal(a, b)
    assert boxed["qa"]["n_sources"] == host["qa"]["n_sources"]
    assert not any((root / "scratch").iterdir())


def test_hscpipe_task_ingests_then_runs_processccd_in_the_image(world, fake_log):
    root, site, parts = world
    files = simulate_hsc_visit(root / "hsc", visit=1234 * 2, ccds=[23], seed=3, jobs=1)
    part = pack_exposure(files, root / "hscparts", codec="rice", parts=1, jobs=1)[0]
    shared_repo = root / "hscrepo"
    (shared_repo / "CALIB").mkdir(parents=True, exist_ok=True)
    spec = _spec(site, part, "hsc", backend="hscpipe", products=str(fake_log / "products"),
                 backend_options={"hscpipe_repo": str(shared_repo)})
    result = run_task(spec, 0)
    assert result["status"] == "ok", result["error"]
    calls = _log(fake_log)
    assert [c["tool"] for c in calls] == ["apptainer", "ingestImages.py", "apptainer", "processCcd.py"]
    scratch = result["scratch"]
    repo = f"{scratch}/hscrepo"
    assert calls[1]["argv"] == [repo, f"{scratch}/hscraw/HSCA00246823.fits", "--mode=link"]
    assert calls[1]["mapper"] == "lsst.obs.hsc.HscMapper\n" and calls[1]["repo"] == ["CALIB", "_mapper"]
    assert calls[3]["argv"] == [repo, "--rerun", "dwf", "--id", "visit=2468", "ccd=23",
                                "--configfile", f"{scratch}/processCcd_dwf.py"]
    assert "config.isr.doBias = True" in calls[3]["config_text"]
    binds = calls[0]["argv"][calls[0]["argv"].index("--bind") + 1].split(",")
    assert f"{shared_repo}:{shared_repo}:ro" in binds
    targets = product_paths(fake_log / "products", result["night"], "HSC_0002468", 23)
    assert sorted(Path(p) for p in result["products"].values()) == sorted(targets.values())
    assert _products(fake_log) == sorted(targets.values())
    assert fits.getdata(targets["mask"], 1)[:, :3].all()
    assert not any((root / "scratch").iterdir())
