"""The pipeline on a real 3-node Slurm (``nodes_cluster``: slurmctld + three slurmd, each node in its
own network, UTS and mount namespaces, with its own hostname, /tmp and 200 MB tmpfs scratch at
/scratch/local). No mocks: ``dwfhpc ingest`` submits real arrays and warm workers, and the tests look
inside each node (``tests/infra/node-ctl.sh exec``) to see where files really are.

Work folders live on the shared folder ``/var/tmp/dwf-nodes-shared`` (pytest's ``tmp_path`` is under
/tmp, which each node has privately).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from dwfhpc.ingest import Ingest, IngestOptions
from dwfhpc.ingest.executors import worker_queue_root
from dwfhpc.statedb import StateDB
from dwfhpc.workers import WorkQueue
from nodes_cluster import NODES, SCRATCH, NodesCluster, nodes_cluster  # noqa: F401  (fixture)
from test_ingest import deliver, parts_cache, products, site_for, write_config  # noqa: F401  (fixture)

pytestmark = pytest.mark.nodes

SMALL_SCRATCH = {"min_free_gb": 0.01}  # the nodes' scratch is a 200 MB tmpfs (the default asks 0.2 GB free)


@pytest.fixture
def work(nodes_cluster: NodesCluster):
    """A fresh work folder on the shared file system, removed afterwards; the cluster idle before."""
    nodes_cluster.wait_idle()
    folder = nodes_cluster.workdir("t")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _scratch_entries(cluster: NodesCluster, node: str) -> list[str]:
    return cluster.on(node, "ls", "-A", SCRATCH).stdout.split()


def _sbatch_wait(cluster: NodesCluster, work: Path, node: str, script: str, name: str) -> str:
    """Run ``script`` as a batch job on ``node`` and wait for it; returns its output."""
    out = work / f"{name}.out"
    cluster.run("sbatch", "--wait", "-w", node, "-o", str(out), "-J", f"dwft-{name}", "--wrap", script, timeout=120)
    return out.read_text()


# --------------------------------------------------------------------------- the cluster itself
def test_three_nodes_with_own_hostname_address_and_private_scratch(nodes_cluster, work):
    c = nodes_cluster
    assert [c.state(n) for n in NODES] == ["idle"] * 3
    for k, node in enumerate(NODES, start=1):
        seen = c.on(node, "sh", "-c", f"hostname; ip -4 -o addr show eth0; stat -f -c %T {SCRATCH} /tmp; "
                                      f"df -P -k {SCRATCH} | tail -1").stdout.splitlines()
        assert seen[0] == node and f"10.78.0.{10 + k}/24" in seen[1]
        assert seen[2:4] == ["tmpfs", "tmpfs"]
        assert 190_000 <= int(seen[4].split()[1]) <= 210_000  # 200 MB
    # a batch job sees the node's name, its scratch (TaskProlog's SLURM_TMPDIR) and the shared folder
    out = _sbatch_wait(c, work, "dwfn2", f"echo $SLURMD_NODENAME $(hostname) $SLURM_TMPDIR; ls {work}", "where")
    assert out.split()[:3] == ["dwfn2", "dwfn2", SCRATCH] and "where.out" in out


def test_a_file_in_one_nodes_scratch_is_invisible_to_the_others(nodes_cluster, work):
    c = nodes_cluster
    token = f"dwft-{uuid.uuid4().hex}"
    try:
        out = _sbatch_wait(c, work, "dwfn1", f"echo hello > {SCRATCH}/{token}; echo private > /tmp/{token}; "
                                             f"echo product > {work}/{token}.product; hostname", "write")
        assert out.strip() == "dwfn1"
        assert c.on("dwfn1", "cat", f"{SCRATCH}/{token}", f"/tmp/{token}").stdout.split() == ["hello", "private"]
        for node in ("dwfn2", "dwfn3"):
            assert token not in _scratch_entries(c, node)
            assert c.on(node, "test", "-e", f"/tmp/{token}", check=False).returncode == 1
        # a job on another node does not see it either; the shared tree does
        out = _sbatch_wait(c, work, "dwfn3", f"test -e {SCRATCH}/{token} && echo seen || echo absent; "
                                             f"cat {work}/{token}.product", "read")
        assert out.split() == ["absent", "product"]
        assert not Path(f"/tmp/{token}").exists() and not Path(f"{SCRATCH}/{token}").exists()  # nor the host
    finally:
        c.on("dwfn1", "rm", "-f", f"{SCRATCH}/{token}", f"/tmp/{token}", check=False)


# --------------------------------------------------------------------------- the pipeline
def test_ingest_array_spreads_over_nodes_and_only_products_reach_the_shared_tree(nodes_cluster, parts_cache, work):
    """``dwfhpc ingest --array --executor slurm``: 6 CCDs as arrays over the three nodes, staged and
    calibrated in each node's tmpfs scratch; the shared tree gets the products and nothing from scratch."""
    c = nodes_cluster
    site = site_for(work, "slurm", node=SMALL_SCRATCH, scheduler={"array_parallelism": 6})
    config = write_config(site, work / "site.yaml")
    deliver(parts_cache, site.path(site.ingest.inbox), "wide", "sci1")
    proc = subprocess.run([sys.executable, "-m", "dwfhpc", "ingest", "--config", str(config), "--array",
                           "--executor", "slurm", "--drain", "--no-report"],
                          env={**os.environ, **c.env}, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with StateDB(site.path(site.ingest.state_db)) as db:
        tasks = db.tasks()
    assert len(tasks) == 6 and {t.state for t in tasks} == {"done"}, [(t.ccd, t.state, t.reason) for t in tasks]
    hosts = {t.result.host for t in tasks}
    assert hosts <= set(NODES) and len(hosts) >= 2, hosts  # an array's tasks ran on more than one node
    assert all(t.result.scratch.startswith(f"{SCRATCH}/dwfhpc-") for t in tasks)
    assert products(work) == sorted([f"DECam_01100006_{k:02d}.cal.fits.fz" for k in (1, 2, 3, 4)]
                                    + ["DECam_01100003_25.cal.fits.fz", "DECam_01100003_32.cal.fits.fz"])
    # scratch was cleaned on every node, never used on the host, never created on the shared tree
    for node in NODES:
        assert not [e for e in _scratch_entries(c, node) if e.startswith("dwfhpc-")], node
    assert not any(p.name.startswith("dwfhpc-DECam") for p in work.rglob("*"))
    assert not Path(SCRATCH).is_dir() or not [p for p in Path(SCRATCH).iterdir() if p.name.startswith("dwfhpc-")]


def test_two_warm_workers_on_different_nodes_never_run_the_same_ccd(nodes_cluster, parts_cache, work, monkeypatch):
    c = nodes_cluster
    monkeypatch.setenv("SLURM_CONF", str(c.conf))
    site = site_for(work, "slurm", node=SMALL_SCRATCH,
                    ingest={"workers": 2, "poll_seconds": 0.5, "lost_after_seconds": 1.0})
    deliver(parts_cache, site.path(site.ingest.inbox), "wide", "sci1", "sci2")  # 8 CCDs
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        ingest.run(drain=True, timeout=300)
        assert ingest.idle()
        tasks = ingest.db.tasks()
        assert len(tasks) == 8 and all(t.state == "done" for t in tasks), [(t.ccd, t.state, t.reason) for t in tasks]
        keys = [(t.expid, t.ccd) for t in tasks]
        assert len(keys) == len(set(keys))
        assert all(t.attempt == 1 for t in tasks)  # nothing lost, nothing run twice
        assert all((t.result and t.result.worker) for t in tasks), "a CCD ran outside the workers"
        # the two workers' heartbeats name two different nodes; every CCD ran on the node of its worker
        beats = {b.worker: b.host for b in WorkQueue(worker_queue_root(site)).beats()}
        assert len(beats) == 2 and len(set(beats.values())) == 2 and set(beats.values()) <= set(NODES), beats
        for t in tasks:
            assert t.result.host == beats[t.result.worker.name]
            assert t.result.scratch.startswith(f"{SCRATCH}/dwfhpc-")
        assert ingest.executor.started_workers == 2
    finally:
        ingest.close()
    assert len(products(work)) == 8
    deadline = time.monotonic() + 120
    while c.run("squeue", "-h", "-n", "dwf-workers", "-o", "%i").stdout.strip():
        assert time.monotonic() < deadline, "the drained workers did not leave the queue"
        time.sleep(0.3)


def _tiny_image(folder: Path) -> Path:
    """A 1-2 MB SIF holding sh, hostname and cat with their libraries (apptainer builds it offline)."""
    root = folder / "rootfs"
    (root / "bin").mkdir(parents=True)
    for exe in ("/bin/sh", "/bin/hostname", "/bin/cat"):
        real = Path(exe).resolve()
        shutil.copy(real, root / "bin" / Path(exe).name)
        for line in subprocess.run(["ldd", str(real)], capture_output=True, text=True, check=True).stdout.splitlines():
            lib = next((w for w in line.split() if w.startswith("/")), None)
            if lib:
                (root / lib.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(Path(lib).resolve(), root / lib.lstrip("/"))
    sif = folder / "tiny.sif"
    subprocess.run(["apptainer", "build", "--force", str(sif), str(root)], capture_output=True, text=True, check=True,
                   timeout=300)
    return sif


def test_image_deploy_then_stage_to_every_node_then_exec_from_local_disk(nodes_cluster, apptainer_available, work):
    from dwfhpc.atomic import sha256_file
    from dwfhpc.cli import main
    from dwfhpc.config import load_site
    from dwfhpc.templates import stage_image_script

    c = nodes_cluster
    built = _tiny_image(work / "build")
    deployed = work / "images"
    assert main(["image", "deploy", "tiny", str(built), "--to", str(deployed)]) == 0
    current = deployed / "tiny.sif"
    local = f"{SCRATCH}/images"
    script = work / "stage.sbatch"
    script.write_text(stage_image_script(load_site("local"), "slurm", current, local, len(NODES), work))
    try:
        c.run("sbatch", "--wait", "--partition=main", str(script), timeout=180)
        digest = sha256_file(current)
        assert digest == sha256_file(built)
        for node in NODES:
            assert c.on(node, "sha256sum", f"{local}/tiny.sif").stdout.split()[0] == digest
            assert c.on(node, "ls", "-A", local).stdout.split() == ["tiny.sif"]  # no .staging.* left
        assert not Path(local).exists()  # staged on the nodes' disks, not on the host
        log = "".join(p.read_text() for p in work.glob("*.out"))
        assert all(f"{node}: {local}/tiny.sif ok" in log for node in NODES), log
        # each node runs the container from its own copy
        for node in NODES:
            out = _sbatch_wait(c, work, node, f"apptainer exec {local}/tiny.sif hostname", f"exec-{node}")
            assert out.split()[-1] == node, out
    finally:
        for node in NODES:
            c.on(node, "rm", "-rf", local, check=False)


# --------------------------------------------------------------------------- losing a node (node-ctl.sh)
def test_a_lost_node_is_marked_down_and_returns_with_empty_scratch(nodes_cluster, work):
    c = nodes_cluster
    c.on("dwfn3", "sh", "-c", f"echo x > {SCRATCH}/marker")
    c.ctl("lose", "dwfn3")
    assert c.run("ip", "netns", "pids", "dwfn3").stdout.strip() == ""  # nothing left running in the node
    t0 = time.monotonic()
    while not c.state("dwfn3").startswith("down"):
        assert time.monotonic() - t0 < 60, f"dwfn3 still {c.state('dwfn3')} after 60 s"
        time.sleep(0.5)
    assert c.on("dwfn3", "true", check=False).returncode != 0  # no node to enter
    # work goes to the other nodes meanwhile
    out = c.run("sbatch", "--wait", "--array=0-3", "-o", str(work / "a-%a.out"), "--wrap", "hostname", timeout=120)
    assert out.returncode == 0
    assert {p.read_text().strip() for p in work.glob("a-*.out")} <= {"dwfn1", "dwfn2"}
    c.ctl("return", "dwfn3")
    assert c.state("dwfn3") == "idle"
    assert _scratch_entries(c, "dwfn3") == []  # its scratch did not survive
    out = _sbatch_wait(c, work, "dwfn3", "hostname", "back")
    assert out.strip() == "dwfn3"
