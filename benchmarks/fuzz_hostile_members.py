"""Issue 26, hostile members: rows of ``benchmarks/fuzz_inbox.py --hostile`` for what only the node or the masters see.

Real simulated DECam exposures (made once, in a child process, so this process's peak RSS measures the
tasks) packed into real parts and forged as ``tests/test_hostile_members.py`` forges them; each case puts
its parts and one good synthetic part in a fresh site's inbox, scans it the way the daemon does, then runs
the node task of every accepted real part in-process (``TaskSpec.from_site`` + ``run_task``) and records
the results as the collector would (``PERMANENT`` kinds fail at once, others would be retried):

- FITS size claims: CCD 25 declaring ZNAXIS1/2 100000 x 100000, 30000 x 30000 (the manifest agreeing),
  2048 x 4146, or really 1000 x 1000: handled = the task fails as integrity (not retried) with the size
  in the reason; notes: the largest peak RSS growth of one task (``resource.getrusage``).
- calibration liars: a science part whose manifest says ``kind: bias``, a flat whose manifest FILTER is
  not the header's, each beside two good biases: handled = the bias master built from the 2 good frames
  only and the liar named with its reason (node integrity failure or quarantine).
- re-delivery: one exposure as ``p1of1`` and as ``p1of2`` + ``p2of2`` in several orders: handled =
  every CCD has exactly one task and each redundant CCD is recorded as a skipped duplicate delivery.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import test_inbox_fuzz as fuzz  # noqa: E402

MANIFEST = ".manifest.json"
FIXTURE = """
import json, sys
from pathlib import Path
from dwfhpc.parts import pack_exposure
from dwfhpc.simulate import simulate_decam_exposure
root = Path(sys.argv[1])
out = {}
for key, expnum, obstype in (("bias1", 1, "zero"), ("bias2", 2, "zero"), ("sci", 4, "object"), ("flat", 6, "dome flat")):
    exp = simulate_decam_exposure(root / "raw", expnum=expnum, obstype=obstype, ccds=[25], seed=expnum, jobs=1)
    part = pack_exposure(exp, root / ("p-" + key), codec="rice", parts=1, jobs=1)[0]
    out[key] = [str(part.tar), str(part.manifest)]
print(json.dumps(out))
"""


def make_fixture(root: Path) -> dict[str, tuple[Path, Path]]:
    """Two biases, a science exposure and a dome flat of CCD 25, packed, made by a child process."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", FIXTURE, str(root)], capture_output=True, text=True, env=env,
                          timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"fixture failed: {proc.stderr[-2000:]}")
    return {k: (Path(t), Path(m)) for k, (t, m) in json.loads(proc.stdout.splitlines()[-1]).items()}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def forge(part: tuple[Path, Path], out: Path, *, member=None, member_fields: dict | None = None,
          **fields) -> str:
    """``part`` rewritten into ``out`` (tarball first, manifest last) with every size and checksum valid again."""
    tar_in, manifest_in = part
    m = json.loads(manifest_in.read_text())
    entries = {mm["name"]: mm for mm in m["members"]}
    tar = out / tar_in.name
    with tarfile.open(tar_in) as src, tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as dst:
        for info in src:
            data = src.extractfile(info).read()
            if member is not None:
                data = member(info.name, data)
            info.size = len(data)
            entries[info.name].update(bytes=len(data), sha256=_sha(data), **(member_fields or {}))
            dst.addfile(info, io.BytesIO(data))
    m.update(fields)
    m.update(tar_bytes=tar.stat().st_size, tar_sha256=_sha(tar.read_bytes()))
    (out / manifest_in.name).write_text(json.dumps(m))
    return manifest_in.name[: -len(MANIFEST)]


def _card(data: bytes, key: str, value: int) -> bytes:
    from astropy.io import fits

    at = data.index(f"{key:<8}= ".encode())
    return data[:at] + fits.Card(key, value).image.encode() + data[at + 80:]


def _site(root: Path):
    from dwfhpc.config import load_site

    (root / "scratch").mkdir(parents=True, exist_ok=True)
    return load_site("local", workdir=root / "site", overrides={"node": {
        "scratch_vars": ["DWF_HOSTILE_SCRATCH"], "scratch_fallback": str(root / "scratch"), "min_free_gb": 0.01}})


def _good(inbox: Path, n: int) -> str:
    _, mpath, m = fuzz.good_part(inbox, n, random.Random(n))
    mpath.write_text(json.dumps(m))
    return mpath.name[: -len(MANIFEST)]


def _scan(box, stems: list[str], good: str, row: dict, failures: list, label: str) -> tuple[dict, dict, int | None]:
    """The daemon's loop (scan, 0.25 s, scan, ...) until every stem is accepted, quarantined or a duplicate."""
    accepted, quarantined, good_at, t_start = {}, {}, None, time.time()
    for step in range(12):
        t0 = time.perf_counter()
        try:
            out = box.scan(t_start + 0.25 * step)
        except Exception as exc:  # noqa: BLE001 - a daemon exit
            row["exits"] += 1
            failures.append(f"{label}: scan raised {type(exc).__name__}: {exc}")
            break
        row["scans"].append(time.perf_counter() - t0)
        accepted.update({s: step for s in out.accepted})
        accepted.update({s: step for s in out.duplicates})
        quarantined.update(dict(out.quarantined))
        if good in accepted and good_at is None:
            good_at = accepted[good]
        if good_at is not None and all(s in accepted or s in quarantined for s in stems):
            break
    if good_at != 0:
        row["delayed"] += 1
        failures.append(f"{label}: good part accepted at scan {good_at}")
    return accepted, quarantined, good_at


def _run_node(site, db, stem: str, row: dict, failures: list, label: str) -> list[tuple[int, dict, int]]:
    """Every CCD task of accepted part ``stem``, in-process, recorded as the collector records it:
    (ccd, result, peak RSS growth in KiB) each."""
    from dwfhpc.ingest.collector import PERMANENT
    from dwfhpc.node import TaskSpec, run_task
    from dwfhpc.node.result import ErrorKind, TaskResult

    part = db.part(stem)
    spec = TaskSpec.from_site(site, part.manifest, part.tar, require_masters=False)
    path = spec.write(site.path(site.ingest.specs) / f"{stem}.json")
    out = []
    for index, ccd in enumerate(spec.ccds):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        row.setdefault("rss_base_kb", before)  # the peak before this class's first task
        t0 = time.perf_counter()
        try:
            result = run_task(path, index)
        except BaseException as exc:  # noqa: BLE001 - run_task must answer with a result, never raise
            row["exits"] += 1
            failures.append(f"{label}: run_task raised {type(exc).__name__}: {exc}")
            continue
        row.setdefault("task_s", []).append(time.perf_counter() - t0)
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        res = TaskResult.from_dict(result)
        if result["status"] == "ok":
            db.finish(stem, ccd, res)
        else:
            db.record_attempt(stem, ccd, res)
            kind = ErrorKind(result["error_kind"]) if result.get("error_kind") else None
            if kind in PERMANENT:
                db.fail(stem, ccd, result["error"])
            result["retried"] = kind not in PERMANENT
        out.append((ccd, result, grew))
    return out


def _outside(root: Path, allowed: tuple[Path, ...]) -> set[str]:
    return set(fuzz.snapshot(root, allowed))


class Case:
    def __init__(self, root: Path, n: int, row: dict, failures: list, label: str):
        from dwfhpc.ingest.inbox import Inbox
        from dwfhpc.statedb import StateDB

        self.root, self.n, self.row, self.failures, self.label = root, n, row, failures, label
        self.site = site = _site(root)
        ing = site.ingest
        self.inbox = site.path(ing.inbox)
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.db = StateDB(site.path(ing.state_db))
        self.box = Inbox(self.inbox, site.path(ing.parts_store), site.path(ing.quarantine), self.db, mem_gb=1,
                         time_minutes=5, arrival_grace=0, verify_threads=1)
        self.before = _outside(root, (root / "site",))

    def scan(self, stems: list[str]) -> tuple[dict, dict]:
        good = _good(self.inbox, self.n + 500_000)
        accepted, quarantined, _ = _scan(self.box, stems, good, self.row, self.failures, self.label)
        return accepted, quarantined

    def close(self) -> None:
        self.box.close()
        self.db.close()
        if _outside(self.root, (self.root / "site",)) != self.before or any((self.root / "scratch").iterdir()):
            self.row["outside"] += 1
            self.failures.append(f"{self.label}: files left outside the site folders or in scratch")


# ---------------------------------------------------------------------------------------------- classes
def size_claims(fix, case: Case, nx: int, ny: int, agrees: bool, real_small: bool) -> bool:
    if real_small:
        import numpy as np

        from dwfhpc.codecs.rice import RiceCodec
        from dwfhpc.parts import read_manifest

        header = read_manifest(fix["sci"][1]).members[0].fits_header()
        small = case.root.parent / f"small-{case.n}.fits.fz"  # not in the watched folder
        RiceCodec().compress(header, np.zeros((ny, nx), np.uint16), small)
        member = lambda name, data: small.read_bytes()  # noqa: E731
    else:
        member = lambda name, data: _card(_card(data, "ZNAXIS1", nx), "ZNAXIS2", ny)  # noqa: E731
    stem = forge(fix["sci"], case.inbox, member=member, member_fields={"shape": [ny, nx]} if agrees else None)
    accepted, quarantined = case.scan([stem])
    size = f"{nx} x {ny}"
    if stem in quarantined:
        ok = size in quarantined[stem]
    else:
        ok = False
        for ccd, result, grew in _run_node(case.site, case.db, stem, case.row, case.failures, case.label):
            case.row["rss_kb"] = max(case.row.get("rss_kb", 0), grew)
            ok = (result["status"] == "failed" and result["error_kind"] == "integrity" and not result["retried"]
                  and size in (result["error"] or "") and "DECam_00000004_25.fits.fz" in result["error"])
            case.row.setdefault("errors", []).append(result.get("error"))
            if not ok:
                case.failures.append(f"{case.label}: {result['status']} ({result.get('error_kind')}): "
                                     f"{result.get('error')}")
    return ok


def calibration_liar(fix, case: Case, which: str) -> bool:
    from astropy.io import fits

    from dwfhpc.ingest.masters import MastersKeeper
    from dwfhpc.layout import master_path

    for key in ("bias1", "bias2"):
        forge(fix[key], case.inbox)
    if which == "science labelled bias":
        liar = forge(fix["sci"], case.inbox, kind="bias", obstype="zero")
        words = ("OBSTYPE='object'", "field kind: 'bias'")
    else:
        liar = forge(fix["flat"], case.inbox, filter="r")
        words = ("FILTER='g' does not match the manifest (field filter: 'r')",)
    stems = ["DECam_00000001.p1of1", "DECam_00000002.p1of1", liar]
    accepted, quarantined = case.scan(stems)
    named = liar in quarantined and any(w in quarantined[liar] for w in words)
    night = None
    for stem in stems:
        if stem not in accepted:
            continue
        night = case.db.part(stem).night
        for ccd, result, _ in _run_node(case.site, case.db, stem, case.row, case.failures, case.label):
            if stem == liar:
                named = (result["status"] == "failed" and not result["retried"] and
                         all(w in (result["error"] or "") for w in words) and "_25.fits" in result["error"])
            elif result["status"] != "ok":
                case.failures.append(f"{case.label}: good bias {stem} CCD {ccd}: {result.get('error')}")
    keeper = MastersKeeper(case.db, case.site.path(case.site.calibration.library),
                           case.site.path(case.site.calibration.masters))
    keeper.update()
    keeper.wait(120)
    master = master_path(case.site.path(case.site.calibration.masters), night or "", "bias", 25)
    ncombine = fits.getheader(master).get("NCOMBINE") if master.is_file() else None
    flats = list(case.site.path(case.site.calibration.masters).rglob("*flat*"))
    built = ncombine == 2 and not flats
    if not built:
        case.failures.append(f"{case.label}: bias master NCOMBINE {ncombine}, flat masters {flats}")
    if not named:
        case.failures.append(f"{case.label}: liar {liar} not named: quarantine {quarantined.get(liar)}, "
                             f"tasks {[(t.state, t.reason) for t in case.db.tasks(part=liar)]}")
    return built and named


def _redelivery_parts(inbox: Path, expnum: int, layout: tuple[tuple[int, int, list[int]], ...]) -> list[str]:
    payloads = {c: random.Random(expnum * 100 + c).randbytes(1500) for c in (25, 32)}
    stems = []
    for k, n, ccds in layout:
        m = fuzz.manifest_dict(expnum, ccds, k, n, payloads)
        m["ccds_in_exposure"] = [25, 32]
        tar = inbox / m["tar_name"]
        fuzz.write_tar(tar, [fuzz.reg(mm["name"], payloads[mm["ccd"]]) for mm in m["members"]])
        fuzz.sign(tar, m)
        stem = m["tar_name"][: -len(".tar")]
        (inbox / f"{stem}{MANIFEST}").write_text(json.dumps(m))
        stems.append(stem)
    return stems


def redelivery(fix, case: Case, order: str) -> bool:
    from dwfhpc.node.result import TaskResult, TaskStatus

    one, two = ((1, 1, [25, 32]),), ((1, 2, [25]), (2, 2, [32]))
    expnum, expid = case.n, f"DECam_{case.n:08d}"
    first, second = {"1 then 2": (one, two), "1 done then 2": (one, two), "2 then 1": (two, one),
                     "all in one scan": (one + two, ())}[order]
    stems = _redelivery_parts(case.inbox, expnum, first)
    accepted, quarantined = case.scan(stems)
    if order == "1 done then 2":
        case.db.finish(f"{expid}.p1of1", 25, TaskResult(status=TaskStatus.OK, ccd=25, started=1.0, finished=2.0))
    if second:
        more = _redelivery_parts(case.inbox, expnum, second)
        a2, q2 = case.scan(more)
        accepted.update(a2)
        quarantined.update(q2)
        stems += more
    tasks = case.db.tasks(expid=expid)
    per_ccd = {c: sum(t.ccd == c for t in tasks) for c in (25, 32)}
    skipped = [s for s in case.db.skipped() if s["part"].startswith(expid)]
    ok = per_ccd == {25: 1, 32: 1} and len(skipped) == 2 and all("duplicate delivery" in s["reason"] for s in skipped)
    if not ok:
        case.failures.append(f"{case.label}: tasks per CCD {per_ccd}, skipped {skipped}, quarantined {quarantined}")
    return ok


def cases():
    """(class, name, run(fix, case))."""
    out = []
    for nx, ny, agrees, small in ((100000, 100000, False, False), (30000, 30000, True, False),
                                  (2048, 4146, False, False), (1000, 1000, True, True)):
        what = f"{nx} x {ny}" + (" (real)" if small else ", manifest agrees" if agrees else "")
        out.append(("FITS size claims", what, lambda f, c, a=(nx, ny, agrees, small): size_claims(f, c, *a)))
    for which in ("science labelled bias", "flat with wrong FILTER"):
        out.append(("calibration liars", which, lambda f, c, w=which: calibration_liar(f, c, w)))
    for order in ("1 then 2", "1 done then 2", "2 then 1", "all in one scan"):
        out.append(("re-delivery", order, lambda f, c, o=order: redelivery(f, c, o)))
    return out


def rows(rounds: int, new_row) -> tuple[dict[str, dict], list[str]]:
    """Run every case ``rounds`` times; ``new_row()``: an empty row of the campaign's table."""
    import warnings

    warnings.filterwarnings("ignore", message="Card is too long")  # the forged ZNAXISn cards
    table: dict[str, dict] = {}
    failures: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="dwf-hostile-members-"))
    try:
        t0 = time.perf_counter()
        fix = make_fixture(work / "fixture")
        fixture_s = time.perf_counter() - t0
        n = 800_000
        for r in range(rounds):
            for cls, name, run in cases():
                n += 1
                row = table.setdefault(cls, new_row())
                tmp = work / f"case-{n}"
                case = None
                try:
                    case = Case(tmp, n, row, failures, f"{cls}: {name}")
                    ok = run(fix, case)
                except Exception as exc:  # noqa: BLE001 - the harness's own trouble, reported as a failure
                    ok = False
                    failures.append(f"{cls}: {name}: {type(exc).__name__}: {exc}")
                finally:
                    if case is not None:
                        case.close()
                    shutil.rmtree(tmp, ignore_errors=True)
                row["cases"] += 1
                row["handled"] += bool(ok)
                if not ok and not any(f.startswith(f"{cls}: {name}") for f in failures):
                    failures.append(f"{cls}: {name}: not handled")
        for cls, row in table.items():
            tasks = row.get("task_s") or []
            row["notes"] = f"node task max {max(tasks):.2f} s" if tasks else ""
            if "rss_kb" in row:
                row["notes"] += (f", peak RSS growth max {row['rss_kb'] / 1024:.1f} MB a task "
                                 f"(over {row['rss_base_kb'] / 1024:.0f} MB)")
        table[next(iter(table))]["notes"] += f" (fixture {fixture_s:.0f} s, child process)"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return table, failures
