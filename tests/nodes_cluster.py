"""A private 3-node Slurm on this machine for tests (``SLURM_NODES=3 tests/infra/start-slurm.sh``).

One slurmctld on the host, three slurmd (``dwfn1``..``dwfn3``), each in its own network, UTS and
mount namespaces: own address (10.78.0.11-13 on the bridge ``dwfnbr0``), own hostname, a private
``/tmp`` and a private 200 MB tmpfs scratch at ``/scratch/local`` (Slurm's TaskProlog exports it as
``SLURM_TMPDIR``). The work tree and :data:`SHARED` are the host's folders, visible on every node, as
a cluster's shared file system; a test's work folder must therefore live under :data:`SHARED`, not
under pytest's ``tmp_path`` (``/tmp`` is private on each node).

Import the ``nodes_cluster`` fixture from here (``from nodes_cluster import nodes_cluster``); it
follows conftest's policy: locally a missing part skips, under ``CI=true`` it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import INFRA, missing

sys.path.insert(0, str(INFRA / "nodes"))
from nodeslock import NodesBusy, nodes_lock  # noqa: E402

PREFIX = Path("/var/tmp/dwf-slurm-nodes")  # not under /tmp: the nodes' /tmp is private
SHARED = Path("/var/tmp/dwf-nodes-shared")
NODES = ("dwfn1", "dwfn2", "dwfn3")
SCRATCH = "/scratch/local"
PORTS = {"CTLD_PORT": "7847", "SLURMD_PORT": "7848"}  # beside the single-node cluster's 7817/7818


@dataclass
class NodesCluster:
    prefix: Path
    conf: Path
    shared: Path
    nodes: tuple[str, ...] = NODES
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env={**os.environ, **self.env}, capture_output=True, text=True,
                              check=check, timeout=timeout)

    def ctl(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """``tests/infra/node-ctl.sh ARGV`` (lose, return, exec, status)."""
        return self.run("bash", str(INFRA / "node-ctl.sh"), *argv, check=check, timeout=timeout)

    def on(self, node: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ARGV inside ``node`` (its network, hostname, /tmp and scratch)."""
        return self.ctl("exec", node, *argv, check=check)

    def state(self, node: str) -> str:
        return self.run("sinfo", "-h", "-N", "-n", node, "-o", "%T").stdout.strip()

    def workdir(self, name: str) -> Path:
        """A fresh folder on the shared file system (every node sees it)."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.shared))

    def wait_idle(self, timeout: float = 90) -> None:
        """Until no job of ours is queued and every node is usable."""
        deadline = time.monotonic() + timeout
        while True:
            queued = self.run("squeue", "-h", "-o", "%i").stdout.split()
            states = [self.state(n) for n in self.nodes]
            if not queued and all(s in ("idle", "mixed", "allocated") for s in states):
                return
            assert time.monotonic() < deadline, f"cluster not idle: queue {queued}, nodes {states}"
            time.sleep(0.3)


def _env() -> dict[str, str]:
    return {**os.environ, "SLURM_NODES": str(len(NODES)), "SLURM_PREFIX": str(PREFIX),
            "NODES_SHARED": str(SHARED), **PORTS}


def start_nodes_cluster() -> NodesCluster:
    if os.geteuid() != 0:
        missing("the 3-node Slurm needs root (network namespaces, mounts, munge, slurmd)")
    for tool in ("ip", "unshare", "nsenter"):  # Slurm and munge: start-slurm.sh installs them
        if not shutil.which(tool):
            missing(f"the 3-node Slurm needs {tool} (iproute2, util-linux)")
    if not Path("/sys/fs/cgroup").is_dir():
        missing("slurmd needs /sys/fs/cgroup")
    probe = subprocess.run(["unshare", "--uts", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        missing(f"cannot make UTS + mount namespaces here: {probe.stderr.strip()}")
    proc = subprocess.run(["bash", str(INFRA / "start-slurm.sh")], env=_env(), capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        missing(f"could not start the 3-node Slurm: {proc.stderr.strip()[-800:]}")
    conf = PREFIX / "slurm.conf"
    return NodesCluster(prefix=PREFIX, conf=conf, shared=SHARED, env={"SLURM_CONF": str(conf)})


def stop_nodes_cluster() -> None:
    subprocess.run(["bash", str(INFRA / "stop-slurm.sh")], env=_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def nodes_cluster():
    """slurmctld + three slurmd in their own namespaces; stopped (namespaces, mounts, bridge) at the end.
    Held under :func:`nodeslock.nodes_lock` for the session: a concurrent session or fault campaign waits."""
    with ExitStack() as held:
        try:
            held.enter_context(nodes_lock(f"pytest session in {Path.cwd()}"))
        except NodesBusy as exc:
            missing(str(exc))
        cluster = start_nodes_cluster()
        try:
            yield cluster
        finally:
            stop_nodes_cluster()
