"""Shared fixtures: a real private Slurm, a real sshd on loopback, the shared data folder.

Policy for the parts that need a service: locally, a missing part skips with a reason; in CI
(``CI=true``) the same situation is a failure, so a green CI run means those tests really ran.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "tests" / "infra"
SHARED = REPO.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(reason: str) -> None:
    """Skip locally, fail in CI: a part the test needs is not there."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------- shared data
@pytest.fixture(scope="session")
def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip("needs ../shared/data beside the checkout (real instrument files)")
    return data


# --------------------------------------------------------------------------- Slurm
@dataclass
class SlurmCluster:
    prefix: Path
    conf: Path
    with_dbd: bool
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env={**os.environ, **self.env}, capture_output=True, text=True, check=check)


def _start_slurm(prefix: Path, with_dbd: bool, ports: dict[str, int], extra: dict[str, str] | None = None) -> SlurmCluster:
    if os.geteuid() != 0:
        missing("the private Slurm needs root (munge, slurmd)")
    if not Path("/sys/fs/cgroup").is_dir():
        missing("slurmd needs /sys/fs/cgroup")
    env = {**os.environ, "SLURM_PREFIX": str(prefix), "WITH_DBD": "1" if with_dbd else "0",
           **{k: str(v) for k, v in ports.items()}, **(extra or {})}
    proc = subprocess.run(["bash", str(INFRA / "start-slurm.sh")], env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        missing(f"could not start Slurm: {proc.stderr.strip()[-500:]}")
    conf = prefix / "slurm.conf"
    return SlurmCluster(prefix=prefix, conf=conf, with_dbd=with_dbd, env={"SLURM_CONF": str(conf)})


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """slurmctld + slurmd on this machine, without accounting (sacct fails, as on many sites)."""
    cluster = _start_slurm(Path("/tmp/dwf-slurm"), False, {"CTLD_PORT": 7817, "SLURMD_PORT": 7818})
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster


@pytest.fixture(scope="session")
def slurm_cluster_dbd() -> SlurmCluster:
    """A second private cluster with slurmdbd + MariaDB accounting (own ports and state)."""
    cluster = _start_slurm(Path("/tmp/dwf-slurm-dbd"), True,
                           {"CTLD_PORT": 7827, "SLURMD_PORT": 7828, "DBD_PORT": 7829, "DB_PORT": 3427},
                           {"CLUSTER": "dwfdbd"})
    yield cluster


# --------------------------------------------------------------------------- sshd
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SshServer:
    """A real OpenSSH server on 127.0.0.1 with throwaway keys; host-key checking stays on."""

    root: Path
    port: int
    host: str = "127.0.0.1"
    user: str = "root"
    alias: str = "dwf-test"
    proc: subprocess.Popen | None = None

    @property
    def key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    def ssh_command(self) -> list[str]:
        return ["ssh", "-F", str(self.ssh_config)]

    def start(self) -> None:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(self.root / "sshd_config"),
                                      "-E", str(self.root / "sshd.log")])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not start; see {self.root / 'sshd.log'}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory) -> SshServer:
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if not sshd or not shutil.which("rsync") or not shutil.which("ssh-keygen"):
        missing("needs openssh-server, openssh-client and rsync (apt-get install openssh-server rsync)")
    if os.geteuid() != 0:
        missing("the test sshd logs in as root on loopback")
    root = tmp_path_factory.mktemp("sshd")
    server = SshServer(root=root, port=_free_port())
    for name in ("host_ed25519", "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    (root / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
    os.chmod(root / "authorized_keys", 0o600)
    host_pub = (root / "host_ed25519.pub").read_text().split()
    server.known_hosts.write_text(f"[{server.host}]:{server.port} {host_pub[0]} {host_pub[1]}\n")
    (root / "sshd_config").write_text(
        f"Port {server.port}\nListenAddress {server.host}\nHostKey {root / 'host_ed25519'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        f"PidFile {root / 'sshd.pid'}\nMaxStartups 100\nMaxSessions 100\n"
    )
    server.ssh_config.write_text(
        f"Host {server.alias}\n  HostName {server.host}\n  Port {server.port}\n  User {server.user}\n"
        f"  IdentityFile {server.key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {server.known_hosts}\n"
        "  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 10\n"
    )
    server.start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- apptainer
@pytest.fixture(scope="session")
def apptainer_available() -> str:
    exe = shutil.which("apptainer")
    if not exe:
        missing("apptainer is not installed (bash .ci/apptainer/install-apptainer.sh)")
    return exe
