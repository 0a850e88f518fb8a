"""Slurm for the benchmarks: ``tests/infra/start-slurm.sh`` (shared or private), its job-completion log, squeue.

* :func:`slurm_env`: ``SLURM_CONF`` of the running cluster, or the shared ``/tmp/dwf-slurm`` started if needed;
* :class:`PrivateSlurm`: a cluster of one's own (own prefix and ports), started/stopped by pid file, whose
  slurmd can be stopped without disturbing anybody; :class:`NodesSlurm`: the three-node cluster
  (``SLURM_NODES=3``, each slurmd in its own namespaces with a private scratch);
* :func:`jobcomp_starts`: each job's / array task's StartTime from ``JobCompLoc``;
* :func:`squeue`: the queue as dicts; :func:`slurmctld_lines`: lines of a prefix's ``slurmctld.log``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from .procs import REPO

_NODES = str(REPO / "tests" / "infra" / "nodes")
if _NODES not in sys.path:
    sys.path.insert(0, _NODES)
from nodeslock import nodes_lock  # noqa: E402

START = REPO / "tests" / "infra" / "start-slurm.sh"
STOP = REPO / "tests" / "infra" / "stop-slurm.sh"


def _start(script_env: dict) -> subprocess.CompletedProcess:
    """start-slurm.sh: starts only what is not running (so also: slurmd again after a stop)."""
    return subprocess.run(["bash", str(START)], capture_output=True, text=True, env=script_env, timeout=900)


def slurm_env(prog: str = "night.py") -> dict:
    """``{"SLURM_CONF": ...}``: the environment's, else the shared ``/tmp/dwf-slurm`` (started if it is down)."""
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        prefix = Path("/tmp/dwf-slurm")
        proc = _start({**os.environ, "SLURM_PREFIX": str(prefix), "WITH_DBD": "0"})
        if proc.returncode != 0:
            raise SystemExit(f"{prog}: error: could not start Slurm: {proc.stderr.strip()[-400:]}")
        conf = str(prefix / "slurm.conf")
    return {"SLURM_CONF": conf}


def jobcomp_starts(conf: str | Path | dict) -> dict[str, float]:
    """``<array job>_<task>`` (and plain job ids) -> StartTime (Unix s, 1 s resolution) from Slurm's job-completion
    log (``JobCompLoc`` of ``conf``: a slurm.conf path, or an environment dict with ``SLURM_CONF``)."""
    if isinstance(conf, dict):
        conf = conf["SLURM_CONF"]
    loc = None
    for line in Path(conf).read_text().splitlines():
        if line.startswith("JobCompLoc="):
            loc = Path(line.split("=", 1)[1].strip())
    out: dict[str, float] = {}
    if not loc or not loc.exists():
        return out
    for line in loc.read_text(errors="replace").splitlines():
        f = dict(w.split("=", 1) for w in line.split() if "=" in w)
        try:
            start = time.mktime(time.strptime(f["StartTime"], "%Y-%m-%dT%H:%M:%S"))
        except (KeyError, ValueError):
            continue
        out[f.get("JobId", "")] = start
        if f.get("ArrayJobId") and f.get("ArrayTaskId"):
            out[f"{f['ArrayJobId']}_{f['ArrayTaskId']}"] = start
    return out


#: squeue's format letters for :func:`squeue`'s fields
SQUEUE_FIELDS = {"id": "%i", "array": "%F", "state": "%T", "reason": "%r", "name": "%j"}


def squeue(slurm_env: dict | None = None, fields=("id", "state", "reason", "name"), *, exe: str = "squeue",
           expand_arrays: bool = False, timeout: float = 30) -> list[dict]:
    """Everything in the queue (anyone's), one dict per line with ``fields`` (keys of :data:`SQUEUE_FIELDS`)."""
    fmt = "|".join(SQUEUE_FIELDS[f] for f in fields)
    argv = [exe, "-h", *(["-r"] if expand_arrays else []), "-o", fmt]
    proc = subprocess.run(argv, env={**os.environ, **(slurm_env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    out = []
    for line in proc.stdout.splitlines():
        f = line.split("|")
        if len(f) == len(fields):
            out.append(dict(zip(fields, f)))
    return out


class PrivateSlurm:
    """A Slurm of one's own (``tests/infra/start-slurm.sh`` with its own prefix and ports).

    Its own, because a fault campaign stops its slurmd: the shared ``/tmp/dwf-slurm`` of the other
    engineers' runs is never touched. Started and stopped by pid file, as start/stop-slurm.sh do.
    """

    def __init__(self, prefix: Path, ports: dict[str, str] | None = None):
        self.prefix = Path(prefix)
        self.env = {"SLURM_CONF": str(self.prefix / "slurm.conf")}
        self.script_env = {**os.environ, "SLURM_PREFIX": str(self.prefix), "WITH_DBD": "0", **(ports or {})}

    def start(self) -> None:
        """start-slurm.sh: starts only what is not running (so also: slurmd again after a stop)."""
        proc = _start(self.script_env)
        if proc.returncode != 0:
            raise RuntimeError(f"start-slurm.sh failed: {proc.stderr.strip()[-400:]}")

    def slurmd_pid(self) -> int | None:
        f = self.prefix / "var" / "run" / "slurmd.pid"
        try:
            pid = int(f.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def stop_slurmd(self) -> str:
        """SIGTERM to our slurmd (its pid file), SIGKILL if it is still there after 15 s."""
        pid = self.slurmd_pid()
        if pid is None:
            return "slurmd was not running"
        os.kill(pid, signal.SIGTERM)
        for _ in range(150):
            try:
                os.kill(pid, 0)
            except OSError:
                return f"slurmd {pid} stopped (SIGTERM)"
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        return f"slurmd {pid} killed (SIGKILL after 15 s)"

    def squeue(self) -> list[dict]:
        """``{id, state, reason, name}`` of each job in this cluster's queue."""
        return squeue(self.env)

    def scancel(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["scancel", *args], env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=30)

    def stop(self) -> None:
        """Cancel whatever is left in this private cluster, then stop its daemons (stop-slurm.sh)."""
        self.scancel("--user", "root")
        time.sleep(1)
        subprocess.run(["bash", str(STOP)], env=self.script_env, capture_output=True, timeout=120)

    def ctld_lines(self, t0: float, t1: float, word: str) -> list[str]:
        return slurmctld_lines(self.prefix, t0, t1, word)


class NodesSlurm(PrivateSlurm):
    """The three-node cluster of ``tests/infra/start-slurm.sh`` with ``SLURM_NODES=3`` (the prefix, ports and
    shared folder of ``tests/nodes_cluster.py``): one slurmctld, slurmd ``dwfn1``..``dwfn3`` each in its own
    network, UTS and mount namespaces with a private tmpfs scratch of ``scratch_size`` at :attr:`scratch_dir`
    (exported to tasks as ``SLURM_TMPDIR``). Every node sees the host's folders except ``/tmp``: a campaign's
    work folder must not be under ``/tmp``."""

    NODES = ("dwfn1", "dwfn2", "dwfn3")
    scratch_dir = "/scratch/local"

    def __init__(self, prefix: Path = Path("/var/tmp/dwf-slurm-nodes"), scratch_size: str = "200m",
                 shared: Path = Path("/var/tmp/dwf-nodes-shared")):
        super().__init__(prefix, {"CTLD_PORT": "7847", "SLURMD_PORT": "7848"})
        self.script_env.update(SLURM_NODES=str(len(self.NODES)), SCRATCH_SIZE=scratch_size, NODES_SHARED=str(shared))
        self._held: ExitStack | None = None

    def start(self) -> None:
        """Take the cluster (``tests/infra/nodes/nodeslock.py``: a test session using it is waited for), then start
        it; :meth:`stop` gives it back."""
        if self._held is None:
            held = ExitStack()
            held.enter_context(nodes_lock("night.py --faults --nodes 3", timeout=3600))
            self._held = held
        super().start()

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self._held is not None:
                self._held.close()
                self._held = None

    def slurmd_pid(self) -> int | None:
        raise NotImplementedError("three slurmd: use tests/infra/node-ctl.sh (lose, return, status)")

    stop_slurmd = slurmd_pid


def slurmctld_lines(prefix: Path, t0: float, t1: float, word: str) -> list[str]:
    """Lines of a Slurm prefix's slurmctld.log between t0 and t1 containing ``word`` (case-insensitive)."""
    f = Path(prefix) / "var" / "log" / "slurmctld.log"
    out = []
    for line in f.read_text(errors="replace").splitlines() if f.exists() else ():
        if not line.startswith("[") or word.lower() not in line.lower():
            continue
        try:
            t = time.mktime(time.strptime(line[1:20], "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            continue
        if t0 - 1 <= t <= t1:
            out.append(line)
    return out
