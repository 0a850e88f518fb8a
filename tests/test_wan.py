"""Smoke test of the whole data path over the emulated telescope-to-cluster link, with a link cut.

Two network namespaces joined by a 300 ms RTT / 200 Mbit/s link (``tests/infra/wan``, vendored
from ../shared/tools/wan), an sshd in the cluster namespace, the private Slurm of
``tests/infra/start-slurm.sh``. A simulated telescope (``dwfhpc simulate --cadence``) writes 2
DECam exposures of 4 CCDs into the raw folder; the real ``dwfhpc push --streams 2`` runs inside
the telescope namespace and delivers over rsync/ssh (and, second run, over one streamed
``dwfhpc receive`` per stream: ``transport.stream``); the real ``dwfhpc ingest --array --executor
slurm`` runs on the host (the sshd shares the host's file system, so the inbox it watches is the
one the push delivers into). While the first part is on the wire the link goes down for 10 s and
comes back: push must retry and recover, and every CCD must end ``done`` with its products, each
part submitted exactly once. Only the command line and read-only SQLite queries of the state DB
and the push journal are used.

Marker ``wan``. Needs root, iproute2, openssh-server, rsync, /dev/net/tun and Slurm; skips without
them when run by hand, fails under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import INFRA, REPO, missing

sys.path.insert(0, str(INFRA / "wan"))
import wanlink  # noqa: E402

pytestmark = [pytest.mark.wan, pytest.mark.slurm, pytest.mark.ssh, pytest.mark.slow]

EXPOSURES, CCDS, STREAMS, PARTS = 2, [1, 2, 3, 4], 2, 2
CUT_SECONDS = 10
DEADLINE = 210  # seconds for the whole night, link cut included


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    lacking = wanlink.requirements()
    if lacking:
        missing("the emulated WAN needs " + ", ".join(lacking))
    wan_dir = tmp_path_factory.mktemp("wan")
    try:
        link = wanlink.setup(wan_dir)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        wanlink.teardown(wan_dir)
        missing(f"could not set up the emulated WAN: {exc}")
    try:
        yield link
    finally:
        print("teardown-wan:", wanlink.teardown(wan_dir))


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO), **(extra or {})}


def _dwfhpc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dwfhpc", *args]


def _stop(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _tail(path: Path, n: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no log)"


#: the two transports: rsync calls into staging + a remote move, or one streamed ``dwfhpc receive`` per
#: stream (its receiver this checkout's dwfhpc: the far namespace's sshd shares this host)
TRANSPORTS = {"rsync": {},
              "stream": {"stream": True, "receiver_command": f"env PYTHONPATH={REPO} {sys.executable} -m dwfhpc"}}


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_night_over_the_wan_with_a_link_cut_loses_nothing(wan, slurm_cluster, tmp_path, transport):
    t_begin = time.monotonic()
    work = tmp_path / "night"
    raw = work / "telescope" / "raw"
    for d in (raw, work / "cluster" / "staging", work / "cluster" / "inbox"):
        d.mkdir(parents=True)
    site = work / "site.yaml"
    site.write_text(wanlink.site_yaml(
        workdir=work, wan=wan, streams=STREAMS, parts=PARTS,
        # a dead link is noticed by rsync's I/O timeout (or the stream's stall limit); retries back off 1, 2, 4 s
        transport={"timeout_seconds": 6, "backoff_seconds": 1, "backoff_max": 4, **TRANSPORTS[transport]},
        ingest={"auto_masters": False, "inbox_poll_seconds": 0.25},
        node={"require_masters": False}, scheduler={"time_minutes": 10, "mem_gb": 1}))
    check = subprocess.run(_dwfhpc("config", "check", str(site)), env=_env(), capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    journal, state = work / "telescope" / "push-journal.sqlite", work / "cluster" / "state.sqlite"
    logs = {name: work / f"{name}.log" for name in ("ingest", "push", "telescope")}
    procs: dict[str, subprocess.Popen] = {}
    cut: dict = {}
    try:
        procs["ingest"] = subprocess.Popen(
            _dwfhpc("ingest", "--config", str(site), "--array", "--executor", "slurm", "--no-report"),
            env=_env(slurm_cluster.env), stdout=logs["ingest"].open("w"), stderr=subprocess.STDOUT)
        procs["push"] = subprocess.Popen(
            wan.in_client(_dwfhpc("push", "--config", str(site), "--streams", str(STREAMS), "--no-live")),
            env=_env(), stdout=logs["push"].open("w"), stderr=subprocess.STDOUT)
        procs["telescope"] = subprocess.Popen(
            _dwfhpc("simulate", "--exposures", str(EXPOSURES), "--ccds", ",".join(map(str, CCDS)),
                    "--cadence", "3", "--out", str(raw)),
            env=_env(), stdout=logs["telescope"].open("w"), stderr=subprocess.STDOUT)

        def cutter():  # the link goes down while the first part is on the wire
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                rows = wanlink.query(journal, "SELECT expid, k FROM parts WHERE state='sending'")
                if rows:
                    time.sleep(0.5)
                    cut["during"] = [f"{r['expid']}.p{r['k']}" for r in rows]
                    cut["window"] = wan.cut(CUT_SECONDS)
                    return
                time.sleep(0.1)
            cut["error"] = "no part was ever sending"

        th = threading.Thread(target=cutter, daemon=True)
        th.start()
        expected = EXPOSURES * len(CCDS)
        deadline = time.monotonic() + DEADLINE
        while True:
            rows = wanlink.query(state, "SELECT state, count(*) n FROM tasks GROUP BY state")
            counts = {r["state"]: r["n"] for r in rows}
            if sum(counts.get(s, 0) for s in ("done", "failed", "lost")) >= expected:
                break
            for name in ("ingest", "push"):
                assert procs[name].poll() is None, f"{name} exited early:\n{_tail(logs[name])}"
            assert time.monotonic() < deadline, (
                f"not finished within {DEADLINE} s: tasks {counts}, cut {cut}\npush:\n{_tail(logs['push'])}\n"
                f"ingest:\n{_tail(logs['ingest'])}")
            time.sleep(1)
        th.join(timeout=5)
        assert procs["telescope"].wait(timeout=30) == 0, _tail(logs["telescope"])
    finally:
        for name in ("telescope", "push", "ingest"):
            _stop(procs.get(name))
    print(f"night over the WAN ({wan.mode}) in {time.monotonic() - t_begin:.0f} s; cut {cut}")

    # the cut really happened mid-transfer, and push retried through it
    assert "window" in cut, cut
    retries = wanlink.query(journal, "SELECT t, message FROM events WHERE level='warning' AND message LIKE 'retry%'")
    assert retries, f"push never retried across the link cut:\n{_tail(logs['push'])}"
    t_down, t_up = cut["window"]
    assert any(r["t"] >= t_down for r in retries)
    # the telescope side: every exposure delivered, every part confirmed, nothing failed
    exps = wanlink.query(journal, "SELECT expid, state FROM exposures")
    assert len(exps) == EXPOSURES and {r["state"] for r in exps} == {"delivered"}, [tuple(r) for r in exps]
    jparts = wanlink.query(journal, "SELECT expid, k, state, attempts FROM parts")
    assert len(jparts) == EXPOSURES * PARTS and {r["state"] for r in jparts} == {"confirmed"}
    assert max(r["attempts"] for r in jparts) >= 2  # at least one part was sent again after the cut
    # the cluster side: 0 lost, every CCD done once, its products on disk
    tasks = wanlink.query(state, "SELECT part, ccd, expid, state, attempt, job_id, result FROM tasks")
    assert len(tasks) == EXPOSURES * len(CCDS)
    assert {r["state"] for r in tasks} == {"done"}, [(r["part"], r["ccd"], r["state"]) for r in tasks]
    assert {(r["expid"], r["ccd"]) for r in tasks} == {(e["expid"], c) for e in exps for c in CCDS}
    assert all(r["attempt"] == 1 for r in tasks)
    for r in tasks:
        result = json.loads(r["result"])
        assert result["status"] == "ok" and result["products"], result
        assert all(Path(p).is_file() for p in result["products"].values()), result["products"]
    products = sorted(p.name for p in (work / "cluster" / "products").rglob("*.cal.fits.fz"))
    assert len(products) == EXPOSURES * len(CCDS), products
    # nothing submitted twice: one array per part, one Slurm task per CCD, no part delivered twice
    subs = wanlink.query(state, "SELECT part, executor, job_id, ntasks FROM submissions")
    sparts = wanlink.query(state, "SELECT stem, state FROM parts")
    assert len(sparts) == EXPOSURES * PARTS and {r["state"] for r in sparts} == {"done"}
    assert sorted(r["part"] for r in subs) == sorted(r["stem"] for r in sparts)
    assert {r["executor"] for r in subs} == {"slurm"} and all(r["job_id"].isdigit() for r in subs)
    assert sum(r["ntasks"] for r in subs) == len(tasks)
    assert len({r["job_id"] for r in tasks}) == len(tasks)
    assert not list((work / "cluster" / "quarantine").glob("*"))
    assert time.monotonic() - t_begin < DEADLINE + 60


def _ticket_key(name: str) -> tuple[str, int, str]:
    """(part, ccd, attempt) of a ticket file name ``<seq>.<part>.<ccd>.a<attempt>.json`` (a part has dots)."""
    fields = name.split(".")
    return ".".join(fields[1:-3]), int(fields[-3]), fields[-2]


def _kill_a_busy_worker(queue_root: Path, deadline: float) -> dict:
    """``kill -9`` the first warm worker seen running a CCD (its heartbeat: busy, a ticket, its pid)."""
    beats = queue_root / "workers"
    while time.monotonic() < deadline:
        for path in sorted(beats.glob("*.json")) if beats.is_dir() else []:
            try:
                beat = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if beat.get("state") == "busy" and beat.get("ticket"):
                time.sleep(0.3)  # well inside the CCD (it takes a few seconds)
                try:
                    os.kill(int(beat["pid"]), signal.SIGKILL)
                except ProcessLookupError:
                    continue  # it finished just now: wait for the next one
                return {"worker": beat["worker"], "ticket": beat["ticket"], "pid": beat["pid"], "t": time.time()}
        time.sleep(0.2)
    return {"error": "no worker was ever seen busy"}


def test_night_on_warm_workers_with_a_worker_killed_and_the_link_cut(wan, slurm_cluster, tmp_path):
    """Issue 25: the night on warm workers over the emulated link; one worker is killed (``kill -9``)
    in the middle of a CCD and the link is cut once: 0 CCDs lost, 0 calibrated twice."""
    t_begin = time.monotonic()
    work = tmp_path / "night"
    raw = work / "telescope" / "raw"
    for d in (raw, work / "cluster" / "staging", work / "cluster" / "inbox"):
        d.mkdir(parents=True)
    site = work / "site.yaml"
    site.write_text(wanlink.site_yaml(
        workdir=work, wan=wan, streams=STREAMS, parts=PARTS,
        transport={"timeout_seconds": 6, "backoff_seconds": 1, "backoff_max": 4, **TRANSPORTS["stream"]},
        # a worker killed mid-CCD leaves its claim behind: lost after 8 s, retried after 1 s by another worker
        ingest={"auto_masters": False, "inbox_poll_seconds": 0.25, "workers": 2, "lost_after_seconds": 8,
                "retry_delay_seconds": 1, "worker_time_minutes": 30},
        node={"require_masters": False}, scheduler={"time_minutes": 10, "mem_gb": 1}))
    check = subprocess.run(_dwfhpc("config", "check", str(site)), env=_env(), capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    journal, state = work / "telescope" / "push-journal.sqlite", work / "cluster" / "state.sqlite"
    queue_root = work / "cluster" / "jobs" / "workers"
    logs = {name: work / f"{name}.log" for name in ("ingest", "push", "telescope")}
    procs: dict[str, subprocess.Popen] = {}
    cut: dict = {}
    killed: dict = {}
    n_exp = EXPOSURES + 1  # one more exposure, so CCDs are still arriving after the kill
    try:
        procs["ingest"] = subprocess.Popen(
            _dwfhpc("ingest", "--config", str(site), "--workers", "2", "--executor", "slurm", "--no-report"),
            env=_env(slurm_cluster.env), stdout=logs["ingest"].open("w"), stderr=subprocess.STDOUT)
        procs["push"] = subprocess.Popen(
            wan.in_client(_dwfhpc("push", "--config", str(site), "--streams", str(STREAMS), "--no-live")),
            env=_env(), stdout=logs["push"].open("w"), stderr=subprocess.STDOUT)
        procs["telescope"] = subprocess.Popen(
            _dwfhpc("simulate", "--exposures", str(n_exp), "--ccds", ",".join(map(str, CCDS)),
                    "--cadence", "8", "--out", str(raw)),
            env=_env(), stdout=logs["telescope"].open("w"), stderr=subprocess.STDOUT)

        def cutter():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if wanlink.query(journal, "SELECT expid FROM parts WHERE state='sending'"):
                    time.sleep(0.5)
                    cut["window"] = wan.cut(CUT_SECONDS)
                    return
                time.sleep(0.1)
            cut["error"] = "no part was ever sending"

        def killer():
            killed.update(_kill_a_busy_worker(queue_root, time.monotonic() + 150))

        threads = [threading.Thread(target=f, daemon=True) for f in (cutter, killer)]
        for th in threads:
            th.start()
        expected = n_exp * len(CCDS)
        deadline = time.monotonic() + DEADLINE + 60
        while True:
            rows = wanlink.query(state, "SELECT state, count(*) n FROM tasks GROUP BY state")
            counts = {r["state"]: r["n"] for r in rows}
            if sum(counts.get(s, 0) for s in ("done", "failed")) >= expected:
                break
            for name in ("ingest", "push"):
                assert procs[name].poll() is None, f"{name} exited early:\n{_tail(logs[name])}"
            assert time.monotonic() < deadline, (
                f"not finished in time: tasks {counts}, cut {cut}, killed {killed}\n"
                f"push:\n{_tail(logs['push'])}\ningest:\n{_tail(logs['ingest'])}")
            time.sleep(1)
        for th in threads:
            th.join(timeout=5)
        assert procs["telescope"].wait(timeout=30) == 0, _tail(logs["telescope"])
    finally:
        for name in ("telescope", "push", "ingest"):
            _stop(procs.get(name), timeout=60)
    print(f"night on workers over the WAN in {time.monotonic() - t_begin:.0f} s; cut {cut}; killed {killed}")

    assert "window" in cut, cut
    assert "pid" in killed, killed
    # every CCD of every exposure done exactly once, by a worker, its products on disk
    tasks = wanlink.query(state, "SELECT part, ccd, expid, state, attempt, result FROM tasks")
    exps = {r["expid"] for r in wanlink.query(journal, "SELECT expid FROM exposures")}
    assert len(exps) == n_exp
    assert len(tasks) == n_exp * len(CCDS)
    assert {(r["expid"], r["ccd"]) for r in tasks} == {(e, c) for e in exps for c in CCDS}
    assert {r["state"] for r in tasks} == {"done"}, [(r["part"], r["ccd"], r["state"]) for r in tasks]
    results = [json.loads(r["result"]) for r in tasks]
    assert all(res["status"] == "ok" and res["worker"] for res in results)
    # the killed worker's CCD: its claim found lost, run again (attempt 2) by another worker
    part, ccd, _ = _ticket_key(killed["ticket"])
    redo = next(r for r in tasks if r["part"] == part and r["ccd"] == ccd)
    assert redo["attempt"] == 2, (killed, redo["attempt"])
    assert json.loads(redo["result"])["worker"]["name"] != killed["worker"]
    # 0 calibrated twice: one product per CCD, and every finished ticket is a distinct (part, ccd, attempt)
    products = sorted(p.name for p in (work / "cluster" / "products").rglob("*.cal.fits.fz"))
    assert len(products) == len(set(products)) == n_exp * len(CCDS), products
    finished = [_ticket_key(p.name) for p in (queue_root / "finished").glob("*.json")]
    assert len(finished) == len({f[:2] for f in finished}) == n_exp * len(CCDS), sorted(finished)
    assert not list((work / "cluster" / "quarantine").glob("*"))
