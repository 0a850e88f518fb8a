"""A node whose scratch keeps failing is excluded, on the real 3-node Slurm (``nodes_cluster``, marker ``nodes``).

dwfn2's 200 MB tmpfs scratch is filled (``fallocate`` inside the node) so every CCD that lands there fails
its scratch check (``ErrorKind.RESOURCE``). ``dwfhpc ingest`` runs arrays of CCDs over the three nodes
(Slurm's least-loaded placement keeps sending work to the idle, failing node): after
``ingest.node_failures_exclude`` such failures dwfn2 is excluded (``sbatch --exclude``), every CCD
ends done on dwfn1 or dwfn3 with its attempts unused, and ``dwfhpc status`` names the node and why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from dwfhpc.ingest import Ingest, IngestOptions
from dwfhpc.states import TaskState
from nodes_cluster import NODES, SCRATCH, NodesCluster, nodes_cluster  # noqa: F401  (fixture)
from test_ingest import deliver, parts_cache, products, site_for, write_config  # noqa: F401  (fixture)

pytestmark = pytest.mark.nodes

BAD = "dwfn2"
SMALL_SCRATCH = {"min_free_gb": 0.01}  # the nodes' scratch is a 200 MB tmpfs


@pytest.fixture
def work(nodes_cluster: NodesCluster):
    nodes_cluster.wait_idle()
    folder = nodes_cluster.workdir("exclude")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def full_scratch(nodes_cluster: NodesCluster):
    """dwfn2's scratch filled to ~5 MB free (a CCD needs tens of MB), emptied afterwards."""
    c = nodes_cluster
    fill = f"{SCRATCH}/dwft-fill"
    c.on(BAD, "fallocate", "-l", "195M", fill)
    free = int(c.on(BAD, "df", "-P", "-k", SCRATCH).stdout.splitlines()[-1].split()[3])
    assert free < 10_000, f"{BAD} scratch still has {free} kB free"
    try:
        yield
    finally:
        c.on(BAD, "rm", "-f", fill, check=False)


def test_a_node_with_full_scratch_is_excluded_and_every_ccd_ends_done_elsewhere(nodes_cluster, parts_cache, work,
                                                                                full_scratch, monkeypatch):
    c = nodes_cluster
    monkeypatch.setenv("SLURM_CONF", str(c.conf))
    threshold = 3  # ingest.node_failures_exclude (the default)
    site = site_for(work, "slurm", node=SMALL_SCRATCH, scheduler={"array_parallelism": 6},
                    ingest={"node_failures_exclude": threshold, "node_failure_window_minutes": 30,
                            "max_attempts": 2})
    deliver(parts_cache, site.path(site.ingest.inbox), "wide", "sci1", "sci2", "sci3")  # 10 CCDs in 4 arrays
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        ingest.run(drain=True, timeout=400)
        assert ingest.idle()
        db = ingest.db
        tasks = db.tasks()
        failures = db.node_failures()
        events = [e["message"] for e in reversed(db.events(500))]
    finally:
        ingest.close()
    where = [(t.ccd, t.state, t.attempt, t.resource_retries, (t.result.host if t.result else None), t.reason) for t in tasks]
    # dwfn2 failed at least `threshold` CCDs, all on its scratch, and nothing else failed anywhere
    assert len(failures) >= threshold, (failures, where)
    assert {f["node"] for f in failures} == {BAD}
    assert all("scratch has" in f["reason"] and "short by" in f["reason"] for f in failures), failures
    # every CCD ended done, on another node, with its attempts unused (resource retries are not attempts)
    assert len(tasks) == 10 and all(t.state == TaskState.DONE for t in tasks), where
    assert all(t.result.host in set(NODES) - {BAD} for t in tasks), where
    assert all(t.attempts_used == 1 for t in tasks), where
    assert sum(t.resource_retries for t in tasks) == len(failures) and all(t.resource_retries <= 5 for t in tasks)
    assert len(products(work)) == 10
    # the exclusion: logged once with its reason, and the later arrays went out with --exclude=dwfn2
    excluded = [m for m in events if m.startswith(f"node {BAD} excluded")]
    assert len(excluded) == 1 and re.search(rf"\d+ resource failures within 30 min \(threshold {threshold}\)",
                                            excluded[0]), events
    assert "new submissions go elsewhere" in excluded[0] and "scratch has" in excluded[0]
    scripts = [p.read_text() for p in site.path(site.ingest.jobs_dir).rglob("*.sh")]
    assert any(f"--exclude={BAD}" in s for s in scripts), "no array was submitted excluding the node"
    # dwfhpc status names the node and the reason (still inside the window)
    config = write_config(site, work / "site.yaml")
    out = subprocess.run([sys.executable, "-m", "dwfhpc", "status", "--config", str(config), "--json"],
                         env={**os.environ, **c.env}, capture_output=True, text=True, timeout=120, check=True).stdout
    (node,) = json.loads(out)["excluded_nodes"]
    assert node["node"] == BAD and node["applied"] and node["failures"] >= threshold
    assert "resource failures within 30 min" in node["reason"] and "scratch has" in node["reason"]
    # dwfn2 itself is fine as far as Slurm knows (only ingest leaves it out) and its scratch kept nothing of ours
    assert c.state(BAD) in ("idle", "mixed", "allocated", "completing")
    assert not [e for e in c.on(BAD, "ls", "-A", SCRATCH).stdout.split() if e.startswith("dwfhpc-")]
