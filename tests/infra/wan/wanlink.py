"""The emulated WAN of this folder, driven from Python: set up, cut, restore, tear down.

Used by ``tests/test_wan.py`` and ``benchmarks/night.py``. Plain subprocess calls to the vendored
``setup-wan.sh`` / ``teardown-wan.sh`` and ``ip``; no dwfhpc imports (the package's internals
are not part of this contract: callers use the ``dwfhpc`` command line and read its SQLite files).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
NS_CLIENT, NS_SERVER = "dwfwan-cli", "dwfwan-srv"  # fixed by setup-wan.sh's defaults: one WAN per machine


def requirements() -> list[str]:
    """What this machine lacks for the emulated link (empty when everything is there)."""
    out = []
    if os.geteuid() != 0:
        out.append("root (network namespaces)")
    for exe in ("ip", "tc", "ssh", "ssh-keygen", "rsync"):
        if not shutil.which(exe):
            out.append(f"{exe} (apt-get install iproute2 openssh-client rsync)")
    if not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()):
        out.append("sshd (apt-get install openssh-server)")
    if not Path("/dev/net/tun").exists():
        out.append("/dev/net/tun (the delay line's TUN pair)")
    return out


@dataclass
class Wan:
    """A running emulated link; ``dir`` holds keys, ``known_hosts``, ``ssh_config`` and logs."""

    dir: Path
    env: dict[str, str] = field(default_factory=dict)
    mode: str = "?"
    client_dev: str = "tcli"
    server_ip: str = "10.77.0.2"
    cuts: list[tuple[float, float]] = field(default_factory=list)  # (t_down, t_up) Unix seconds

    @property
    def key(self) -> Path:
        return self.dir / "userkey"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def in_client(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the telescope namespace."""
        return ["ip", "netns", "exec", NS_CLIENT, *argv]

    def link(self, up: bool) -> None:
        subprocess.run(["ip", "-n", NS_CLIENT, "link", "set", self.client_dev, "up" if up else "down"],
                       check=True, capture_output=True, timeout=10)

    def cut(self, seconds: float) -> tuple[float, float]:
        """Take the telescope's side of the link down for ``seconds``, then bring it back up."""
        t_down = time.time()
        self.link(False)
        try:
            time.sleep(seconds)
        finally:
            self.link(True)
        self.cuts.append((t_down, time.time()))
        return self.cuts[-1]

    def ssh_ok(self, timeout: float = 20) -> bool:
        argv = self.in_client(["ssh", "-F", str(self.dir / "ssh_config"), "-o", f"ConnectTimeout={int(timeout)}",
                               "wan-server", "true"])
        return subprocess.run(argv, capture_output=True, timeout=timeout + 5).returncode == 0


def busy() -> list[str]:
    """``pid command`` of every process inside the WAN's two namespaces: not empty while a link is up.

    The namespace names are fixed (one WAN per machine) and ``setup-wan.sh`` tears down whatever link
    is there first, so a caller sharing the machine checks this before :func:`setup`.
    """
    out = []
    for ns in (NS_CLIENT, NS_SERVER):
        proc = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
        for pid in proc.stdout.split():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            out.append(f"{pid} {cmd[:160]}")
    return out


def intact(wan: Wan) -> bool:
    """True while the sshd this link's set-up started is still running (nobody tore the link down meanwhile)."""
    try:
        pid = int((wan.dir / "sshd.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def setup(wan_dir: Path, *, delay_ms: int = 150, rate_mbit: int = 200, timeout: float = 90) -> Wan:
    """Run the vendored ``setup-wan.sh``; raises ``RuntimeError`` with its stderr on failure."""
    wan_dir = Path(wan_dir)
    wan_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WAN_DIR": str(wan_dir), "DELAY_MS": str(delay_ms), "RATE_MBIT": str(rate_mbit),
           "NS_CLIENT": NS_CLIENT, "NS_SERVER": NS_SERVER}
    proc = subprocess.run(["bash", str(HERE / "setup-wan.sh")], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"setup-wan.sh failed (exit {proc.returncode}): {proc.stderr.strip()[-600:]}")
    info = dict(line.split("=", 1) for line in (wan_dir / "link.env").read_text().split() if "=" in line)
    wan = Wan(dir=wan_dir, env=env, mode=info.get("MODE", "?"), client_dev=info.get("CLIENT_DEV", "tcli"),
              server_ip=info.get("SERVER_IP", "10.77.0.2"))
    if not wan.known_hosts.exists() or not wan.known_hosts.read_text().strip():
        raise RuntimeError(f"setup-wan.sh did not record the server's host key in {wan.known_hosts} "
                           f"(sshd log: {wan_dir / 'sshd.log'})")
    return wan


def teardown(wan_dir: Path) -> str:
    env = {**os.environ, "WAN_DIR": str(wan_dir), "NS_CLIENT": NS_CLIENT, "NS_SERVER": NS_SERVER}
    proc = subprocess.run(["bash", str(HERE / "teardown-wan.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    return proc.stdout.strip()


def site_yaml(*, workdir: Path, wan: Wan, streams: int, parts: int, executor: str = "slurm",
              transport: dict | None = None, push: dict | None = None, ingest: dict | None = None,
              scheduler: dict | None = None, node: dict | None = None, calibration: dict | None = None) -> str:
    """A site config (YAML) for one machine playing both ends over the emulated link.

    The telescope side (push) runs inside the client namespace and delivers over ssh to the sshd
    in the server namespace; that sshd shares this host's file system, so the receiver's staging
    and inbox are ordinary host folders, and the ingest (run on the host, with the host's Slurm)
    watches that same inbox.
    """
    import json

    workdir = Path(workdir).resolve()
    cfg = {
        "name": "wan", "description": "telescope and cluster on one machine, joined by the emulated WAN",
        "workdir": str(workdir), "instrument": "decam",
        "push": {"raw_dir": "telescope/raw", "outgoing_dir": "telescope/outgoing",
                 "journal": "telescope/push-journal.sqlite", "codec": "rice", "parts": parts, "streams": streams,
                 "jobs": 2, "mode": "parallel", "poll_seconds": 0.5, "stable_seconds": 1,
                 "incomplete_timeout": 120, **(push or {})},
        "transport": {"kind": "ssh", "host": wan.server_ip, "user": "root", "port": 22, "key": str(wan.key),
                      "known_hosts": str(wan.known_hosts), "control_persist": 600,
                      "staging": str(workdir / "cluster" / "staging"), "inbox": str(workdir / "cluster" / "inbox"),
                      "retries": 8, "backoff_seconds": 1, "backoff_max": 8, "timeout_seconds": 120,
                      **(transport or {})},
        "ingest": {"inbox": "cluster/inbox", "quarantine": "cluster/quarantine", "parts_store": "cluster/parts",
                   "state_db": "cluster/state.sqlite", "specs": "cluster/specs", "jobs_dir": "cluster/jobs",
                   "executor": executor, "poll_seconds": 1, "max_attempts": 3, "lost_after_seconds": 60,
                   "report_dir": "cluster/reports", **(ingest or {})},
        "scheduler": {"time_minutes": 15, "mem_gb": 1, "cpus_per_task": 1, "array_parallelism": 64,
                      **(scheduler or {})},
        "node": {"scratch_vars": ["SLURM_TMPDIR", "TMPDIR"], "scratch_fallback": "/tmp", "min_free_gb": 0.2,
                 "backend": "embedded", **(node or {})},
        "calibration": {"products": "cluster/products", "library": "cluster/calibs", "masters": "cluster/masters",
                        "refcat": None, **(calibration or {})},
    }
    return json.dumps(cfg, indent=1)  # JSON is YAML


def ro(db: Path) -> sqlite3.Connection:
    """A read-only connection to a state DB or push journal (WAL; written by another process)."""
    con = sqlite3.connect(f"file:{Path(db).resolve()}?mode=ro", uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    return con


def query(db: Path, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    if not Path(db).exists():
        return []
    try:
        con = ro(db)
    except sqlite3.OperationalError:
        return []
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # schema not created yet
        return []
    finally:
        con.close()
