"""CPU accounting: CPU-seconds per science CCD by component, both sides, baseline vs current tree.

The kernel's accounting, not wall clocks: every component is a child of this script, reaped with
``os.wait4`` (user + system CPU of the child and of every descendant it reaped):

1. pack: ``python3 -m dwfhpc pack RAW --out DIR`` per exposure, each tree's default codec and flags;
2. transfer: one ``rsync -e ssh`` per exposure (push's rsync options) through an OpenSSH
   ControlMaster (our child, as push keeps one per stream) into a private ``sshd -D`` on 127.0.0.1
   (our child): client = rsync + ssh mux clients + the master; server = sshd, reaped after the
   master is closed (its session processes and the remote rsync are its reaped descendants);
3. ``python3 -m dwfhpc ingest --config SITE.yaml --drain --executor local --no-report``, run
   inside a wrapper that writes RUSAGE_SELF / RUSAGE_CHILDREN at exit: daemon vs node tasks
   (submitit's local task processes are the daemon's reaped children);
4. warm worker (``benchmarks/cpu_warm.py``, one core): ``process_time`` per CCD and per step.

Calibration frames (biases, dome flats) go through 1-3 in a phase of their own (transfer, then
ingest --drain, which files them and builds the masters) before the science phase, so their CPU
is measured apart and never divided into the science figures. Both trees run in sequence on the
same inputs (made once by the current tree's simulator: RICE tile-compressed DECam ``.fits.fz``).

``--warm-only``: only step 4 (no pack/transfer/ingest figures): the current tree packs the inputs,
they are copied into the inbox and drained by its ingest (calibration, then science) to make the
masters and task specs once (not measured; ``--warm-work DIR`` keeps them and re-uses them), then
each tree's warm worker runs on those same specs; prints a per-step table (no report file).

Usage: python3 benchmarks/cpu.py [--ccds 8] [--exposures 3] [--baseline REV_OR_PATH] [--current PATH]
       [--out benchmarks/results/cpu.md] [--quick] [--keep] [--warm-only [--warm-work DIR]]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cpu_procs import INGEST_WRAP, Sshd, cleanup, run_measured, say  # noqa: E402
from cpu_report import write_report  # noqa: E402

PY = sys.executable
N_BIAS = N_FLAT = 3


def tree_env(tree: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(tree)
    return env


def resolve_baseline(spec: str, current: Path, root: Path) -> tuple[Path, Path | None]:
    """A folder as is; otherwise a git revision checked out in a temporary worktree (removed at exit)."""
    if Path(spec).is_dir():
        return Path(spec).resolve(), None
    wt = root / "baseline-tree"
    subprocess.run(["git", "-C", str(current), "worktree", "add", "--detach", str(wt), spec], check=True,
                   capture_output=True)
    return wt, wt


def describe(tree: Path) -> str:
    git = ["git", "-C", str(tree)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", "dwfhpc"],
                           capture_output=True, text=True).stdout.splitlines()
    if not dirty:
        return f"{head} (clean)"
    diff = subprocess.run([*git, "diff", "HEAD", "--", "dwfhpc"], capture_output=True).stdout
    import hashlib
    return (f"{head} + uncommitted changes in {len(dirty)} file(s) of dwfhpc/ "
            f"(diff sha256 {hashlib.sha256(diff).hexdigest()[:12]})")


def make_inputs(current: Path, out: Path, ccds: int, exposures: int) -> dict:
    if not sorted(out.glob("DECam_*.fits*")):
        simulate(current, out, ccds, exposures)
    else:
        say(f"re-using the inputs in {out}")
    return check_inputs(out, exposures)


def simulate(current: Path, out: Path, ccds: int, exposures: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    say(f"simulating inputs with the current tree: DECam CCDs 1-{ccds}, {N_BIAS} biases + {N_FLAT} dome flats + "
        f"{exposures} science exposures")
    run_measured([PY, "-m", "dwfhpc", "simulate", "--instrument", "decam", "--exposures", str(exposures),
                  "--biases", str(N_BIAS), "--flats", str(N_FLAT), "--ccds", f"1-{ccds}", "--out", str(out)],
                 env=tree_env(current), cwd=out, log=out / "simulate.log")


def check_inputs(out: Path, exposures: int) -> dict:
    raws = sorted(out.glob("DECam_*.fits*"))
    if len(raws) != N_BIAS + N_FLAT + exposures:
        raise RuntimeError(f"simulate wrote {len(raws)} raws, expected {N_BIAS + N_FLAT + exposures}")
    head = raws[-1].read_bytes()[:200_000]
    compressed = all(r.name.endswith(".fits.fz") for r in raws) and b"ZCMPTYPE= 'RICE_1" in head
    if not compressed:
        raise RuntimeError("the simulator did not write RICE tile-compressed .fits.fz: fpack them first")
    ncal = N_BIAS + N_FLAT
    return {"cal": raws[:ncal], "sci": raws[ncal:], "refcat": out / "refcat.fits",
            "raw_mb": sum(r.stat().st_size for r in raws[ncal:]) / 1e6}


def site_yaml(tree: Path, work: Path, refcat: Path) -> Path:
    import yaml

    cfg = yaml.safe_load((tree / "configs" / "local.yaml").read_text())
    cfg["workdir"] = str(work / "site")
    cfg.setdefault("ingest", {})["executor"] = "local"
    cfg.setdefault("node", {}).update({"scratch_vars": [], "scratch_fallback": str(work / "scratch"),
                                       "min_free_gb": 0.05})
    cfg.setdefault("calibration", {})["refcat"] = str(refcat)
    (work / "scratch").mkdir(parents=True, exist_ok=True)
    path = work / "site.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def pack_all(tree: Path, raws: list[Path], out: Path, logs: Path) -> list[dict]:
    rows = []
    for raw in raws:
        dest = out / raw.name.split(".")[0]
        m = run_measured([PY, "-m", "dwfhpc", "pack", str(raw), "--out", str(dest)], env=tree_env(tree),
                         cwd=out.parent, log=logs / f"pack-{dest.name}.log")
        manifests = [json.loads(p.read_text()) for p in sorted(dest.glob("*.manifest.json"))]
        ccds = sum(len(mf.get("members", [])) for mf in manifests)
        size = sum(p.stat().st_size for p in dest.glob("*.tar"))
        codecs = sorted({str(mf.get("codec")) for mf in manifests})
        rows.append({"raw": raw.name, "dir": dest, "cpu": m.cpu, "wall": m.wall, "ccds": ccds, "bytes": size,
                     "codec": ",".join(codecs)})
        say(f"  pack {raw.name}: {m.cpu:.2f} CPU-s ({m.user:.2f} user + {m.sys:.2f} sys), {ccds} CCDs, "
            f"{size / 1e6:.1f} MB, codec {','.join(codecs)}")
    return rows


def transfer(packed: list[dict], inbox: Path, ssh_root: Path, logs: Path, what: str) -> dict:
    sshd = Sshd(ssh_root).setup()
    sshd.start()
    client = 0.0
    try:
        for row in packed:
            files = sorted(row["dir"].glob("*.tar")) + sorted(row["dir"].glob("*.manifest.json"))
            client += sshd.rsync(files, inbox, logs / f"rsync-{row['dir'].name}.log").cpu
    finally:
        master, server = sshd.finish() if sshd.proc else (None, None)
    out = {"rsync": client, "master": master.cpu, "client": client + master.cpu, "server": server.cpu}
    say(f"  transfer {what}: client {out['client']:.2f} CPU-s (rsync+mux {client:.2f}, ControlMaster "
        f"{master.cpu:.2f}), sshd + remote rsync {server.cpu:.2f} CPU-s")
    return out


def ingest(tree: Path, site: Path, work: Path, logs: Path, what: str) -> dict:
    split = work / f"ingest-{what}.rusage.json"
    log = logs / f"ingest-{what}.log"
    m = run_measured([PY, "-c", INGEST_WRAP, str(split), "ingest", "--config", str(site), "--drain",
                      "--executor", "local", "--no-report"], env=tree_env(tree), cwd=work, log=log, check=False)
    text = log.read_text(errors="replace")
    tasks = next((ln for ln in text.splitlines() if ln.startswith("tasks:")), "tasks: ?")
    if m.rc != 0:
        raise RuntimeError(f"ingest ({what}) exited {m.rc}: {tasks}\n{text[-1500:]}")
    s = json.loads(split.read_text()) if split.exists() else None
    out = {"total": m.cpu, "wall": m.wall, "tasks_line": tasks, "split": s is not None}
    if s:
        out["tasks"] = s["children"]
        out["daemon"] = m.cpu - s["children"]  # its own CPU + teardown after atexit
        out["teardown"] = m.cpu - s["children"] - s["self"]
    say(f"  ingest {what}: {m.cpu:.2f} CPU-s in {m.wall:.1f} s" +
        (f" (daemon {out['daemon']:.2f}, node tasks {out['tasks']:.2f})" if s else "") + f"; {tasks}")
    return out


def warm(tree: Path, work: Path, inputs: dict, logs: Path, *, packer: bool = True, tag: str = "") -> dict:
    log = logs / f"warm{tag}.log"
    extra = ["--raws", *map(str, inputs["sci"]), "--pack-out", str(work / f"warm-pack{tag}")] if packer else []
    m = run_measured([PY, str(HERE / "cpu_warm.py"), "--specs", str(work / "site" / "cluster" / "specs"),
                      "--products", str(work / f"warm-products{tag}"), "--scratch", str(work / f"warm-scratch{tag}"),
                      *extra], env=tree_env(tree), cwd=work, log=log, check=False)
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("{")]
    if m.rc != 0 or not lines:
        raise RuntimeError(f"warm worker exited {m.rc}: {log.read_text(errors='replace')[-1500:]}")
    out = json.loads(lines[-1])
    out["process_cpu"] = m.cpu
    w = out["worker"]
    packed = out.get("packer", {}).get("rows", [])
    say(f"  warm worker: {sum(r['cpu'] for r in w) / len(w):.3f} CPU-s per CCD over {len(w)} CCDs on core "
        f"{out['core']}" + (f"; warm packer {sum(r['cpu'] for r in packed) / max(1, sum(r['ccds'] for r in packed)):.4f}"
                            f" CPU-s per CCD" if packed else ""))
    return out


def prepare_warm(tree: Path, inputs: dict, work: Path) -> None:
    """Masters and science task specs for the warm worker, made once by ``tree`` (nothing measured)."""
    specs = work / "site" / "cluster" / "specs"
    if specs.is_dir() and any(specs.rglob("*.json")):
        say(f"re-using the specs and masters in {work}")
        return
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    site = site_yaml(tree, work, inputs["refcat"])
    inbox = work / "site" / "cluster" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for what in ("cal", "sci"):
        for row in pack_all(tree, inputs[what], work / "outgoing", logs):
            for f in sorted(row["dir"].glob("*.tar")) + sorted(row["dir"].glob("*.manifest.json")):
                shutil.copyfile(f, inbox / f.name)  # parts before manifests, as push sends them
        ingest(tree, site, work, logs, what)


def warm_table(results: dict) -> str:
    """Markdown: mean CPU-s per CCD by step for each tree (as the report's warm-worker table)."""
    sys.path.insert(0, str(HERE))
    from cpu_warm import ORDER

    labels = list(results)
    head = "| step | " + " | ".join(f"{k} CPU-s / CCD" for k in labels) + " |"
    lines = [head, "|" + "---|" * (len(labels) + 1)]
    means = {}
    for k, res in results.items():
        rows = res["worker"]
        steps: dict[str, float] = {}
        for r in rows:
            for s, v in r["steps"].items():
                steps[s] = steps.get(s, 0.0) + v / len(rows)
        means[k] = (steps, sum(r["cpu"] for r in rows) / len(rows), sorted(r["cpu"] for r in rows)[len(rows) // 2])
    names = [s for s in ORDER if any(s in m[0] for m in means.values())]
    names += sorted({s for m in means.values() for s in m[0]} - set(names))
    for s in names:
        lines.append(f"| {s} | " + " | ".join(f"{means[k][0].get(s, 0.0):.3f}" for k in labels) + " |")
    lines.append("| **per CCD (mean)** | " + " | ".join(f"**{means[k][1]:.3f}**" for k in labels) + " |")
    lines.append("| per CCD (median) | " + " | ".join(f"{means[k][2]:.3f}" for k in labels) + " |")
    lines.append("| import dwfhpc + dwfhpc.node.run (once) | "
                 + " | ".join(f"{results[k]['import_cpu']:.3f}" for k in labels) + " |")
    return "\n".join(lines)


def measure_tree(label: str, tree: Path, inputs: dict, work: Path) -> dict:
    say(f"== {label}: {tree}")
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    site = site_yaml(tree, work, inputs["refcat"])
    inbox = work / "site" / "cluster" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    # `python -m` puts the working folder first on sys.path: never run from a checkout, and check
    where = subprocess.run([PY, "-c", "import dwfhpc; print(dwfhpc.__file__)"], env=tree_env(tree), cwd=work,
                           capture_output=True, text=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"{label}: `import dwfhpc` gives {where}, not the tree {tree}")
    res: dict = {"tree": str(tree), "commit": describe(tree)}
    res["pack_cal"] = pack_all(tree, inputs["cal"], work / "outgoing", logs)
    res["pack_sci"] = pack_all(tree, inputs["sci"], work / "outgoing", logs)
    res["xfer_cal"] = transfer(res["pack_cal"], inbox, work / "ssh", logs, "calibration")
    res["ingest_cal"] = ingest(tree, site, work, logs, "cal")
    masters = work / "site" / "cluster" / "masters"
    res["masters_after_cal"] = len([p for p in masters.rglob("*") if p.is_file()]) if masters.exists() else 0
    res["xfer_sci"] = transfer(res["pack_sci"], inbox, work / "ssh", logs, "science")
    res["ingest_sci"] = ingest(tree, site, work, logs, "sci")
    products = work / "site" / "cluster" / "products"
    res["products"] = len([p for p in products.rglob("*") if p.is_file()]) if products.exists() else 0
    res["warm"] = warm(tree, work, inputs, logs)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ccds", type=int, default=8, help="science CCDs per exposure (DECam CCDs 1-N)")
    ap.add_argument("--exposures", type=int, default=3, help="science exposures")
    default_base = "/tmp/dwfhpc-baseline" if Path("/tmp/dwfhpc-baseline/dwfhpc").is_dir() else "b3e4913"
    ap.add_argument("--baseline", default=default_base, help="a checkout folder or a git revision")
    ap.add_argument("--current", type=Path, default=HERE.parent)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "cpu.md")
    ap.add_argument("--quick", action="store_true", help="2 CCDs, 1 exposure: a smoke run")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    ap.add_argument("--inputs", type=Path, default=None,
                    help="keep the simulated inputs in this folder, and re-use them if already there")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (printed) for inspection")
    ap.add_argument("--render", type=Path, default=None, help="only write the report from a --json file")
    ap.add_argument("--warm-only", action="store_true",
                    help="only the warm worker (step 4) of each tree, on specs made once by the current tree")
    ap.add_argument("--warm-work", type=Path, default=None,
                    help="with --warm-only: make (or re-use) the masters and specs in this folder")
    args = ap.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text())
        write_report(args.out, saved["results"], saved["meta"])
        print(args.out.read_text())
        return 0
    if args.quick:
        args.ccds, args.exposures = 2, 1

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    root = Path(tempfile.mkdtemp(prefix="dwf-bench-cpu-"))
    worktree = None
    t0 = time.monotonic()
    try:
        current = args.current.resolve()
        baseline, worktree = resolve_baseline(args.baseline, current, root)
        load_before = os.getloadavg()
        say(f"work folder {root}; nproc {os.cpu_count()}; load average {load_before}")
        inputs = make_inputs(current, args.inputs or root / "inputs", args.ccds, args.exposures)
        if args.warm_only:
            work = args.warm_work.resolve() if args.warm_work else root / "warm"
            prepare_warm(current, inputs, work)
            warm_res = {label: warm(tree, work, inputs, work / "logs", packer=False, tag=f"-{label}")
                        for label, tree in (("baseline", baseline), ("current", current))}
            if args.json:
                args.json.write_text(json.dumps({"load": os.getloadavg(), "results": warm_res}, indent=1,
                                                default=str))
            print(warm_table(warm_res))
            return 0
        results = {}
        for label, tree in (("baseline", baseline), ("current", current)):
            results[label] = measure_tree(label, tree, inputs, root / label)
        load_after = os.getloadavg()
        meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "nproc": os.cpu_count(),
                "load_before": load_before, "load_after": load_after, "ccds": args.ccds,
                "exposures": args.exposures, "cal_exposures": N_BIAS + N_FLAT, "raw_mb": inputs["raw_mb"],
                "quick": args.quick, "seconds": time.monotonic() - t0,
                "command": "python3 benchmarks/cpu.py " + " ".join(sys.argv[1:])}
        dump = json.dumps({"meta": meta, "results": results}, indent=1, default=str)
        (root / "cpu.json").write_text(dump)  # kept with --keep: `--render` re-makes the report from it
        if args.json:
            args.json.write_text(dump)
        write_report(args.out, results, meta)
        say(f"wrote {args.out} ({time.monotonic() - t0:.0f} s)")
        print(args.out.read_text())
        return 0
    except KeyboardInterrupt as exc:
        say(f"interrupted ({exc}): cleaning up")
        return 130
    finally:
        cleanup()
        if worktree:
            subprocess.run(["git", "-C", str(args.current), "worktree", "remove", "--force", str(worktree)],
                           capture_output=True)
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
