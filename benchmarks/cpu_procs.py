"""Process plumbing for ``benchmarks/cpu.py``: children measured by the kernel, a private sshd.

Every measured component is a child of this process. :func:`run_measured` starts it in its own
session and reaps it with ``os.wait4``: the rusage the kernel returns is the child's user + system
CPU plus that of every descendant it reaped (a pack's compression pool, rsync's ssh, sshd's session
processes and the remote rsync, ingest's node tasks). Nothing here reads a wall clock for CPU.

:data:`INGEST_WRAP` runs ``python -m dwfhpc ...`` inside a tiny ``python -c`` wrapper that, at exit,
writes the process's own ``RUSAGE_SELF`` and its reaped children's ``RUSAGE_CHILDREN``: the split of
the ingest daemon's CPU from its node tasks' (the daemon's wait4 total minus both = interpreter
teardown after atexit, counted with the daemon).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

#: processes started here and not reaped yet (cleaned up on exit and on Ctrl-C)
LIVE: dict[int, subprocess.Popen] = {}

INGEST_WRAP = r"""
import atexit, json, os, resource, runpy, sys
_out = sys.argv[1]
def _dump():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(_out, "w") as fh:
        json.dump({"self": s.ru_utime + s.ru_stime, "children": c.ru_utime + c.ru_stime,
                   "self_user": s.ru_utime, "self_sys": s.ru_stime}, fh)
atexit.register(_dump)
if sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path.pop(0)
sys.argv = ["dwfhpc", *sys.argv[2:]]
runpy.run_module("dwfhpc", run_name="__main__", alter_sys=True)
"""


def say(line: str) -> None:
    print(f"[cpu {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


@dataclass
class Measured:
    argv: list[str]
    rc: int
    user: float
    sys: float
    wall: float
    log: Path | None = None

    @property
    def cpu(self) -> float:
        return self.user + self.sys


def start(argv: list[str], *, env: dict | None = None, cwd: Path | None = None, log: Path | None = None,
          stdin=subprocess.DEVNULL) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT if log else None,
                                stdin=stdin, start_new_session=True)
    finally:
        if log:
            out.close()
    LIVE[proc.pid] = proc
    return proc


def reap(proc: subprocess.Popen, argv: list[str], t0: float, log: Path | None = None) -> Measured:
    """``os.wait4`` the child: its CPU and that of every descendant it reaped."""
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
    LIVE.pop(proc.pid, None)
    return Measured(argv, proc.returncode, ru.ru_utime, ru.ru_stime, time.monotonic() - t0, log)


def run_measured(argv: list[str], *, env: dict | None = None, cwd: Path | None = None, log: Path | None = None,
                 check: bool = True) -> Measured:
    t0 = time.monotonic()
    m = reap(start(argv, env=env, cwd=cwd, log=log), argv, t0, log)
    if check and m.rc != 0:
        tail = log.read_text(errors="replace")[-1500:] if log and log.exists() else ""
        raise RuntimeError(f"{' '.join(map(str, argv[:6]))} ... exited {m.rc}\n{tail}")
    return m


def children_of(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal a child we started (its process group: it runs in its own session); SIGKILL if it lingers."""
    if proc.returncode is not None or proc.pid not in LIVE:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _ = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            pid = proc.pid
        if pid:
            proc.returncode = -sig
            LIVE.pop(proc.pid, None)
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(proc.pid, 0)
    except ChildProcessError:
        pass
    proc.returncode = -signal.SIGKILL
    LIVE.pop(proc.pid, None)


def cleanup() -> None:
    """Stop every child still running, then sweep what is left of its process group (its descendants)."""
    for proc in list(LIVE.values()):
        stop(proc, timeout=5.0)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    """A private OpenSSH server on 127.0.0.1 (throwaway keys), run in the foreground as our child.

    The same set-up as tests/conftest.py's ``SshServer`` (copied, not imported). Stopped with
    SIGTERM and reaped with wait4: sshd + its session processes + the remote rsync they ran.
    Clients use an OpenSSH ControlMaster (our child too), as ``dwfhpc push`` does per stream.
    """

    root: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    alias: str = "dwf-cpu"
    proc: subprocess.Popen | None = None
    master: subprocess.Popen | None = None
    t0: float = 0.0
    t_master: float = 0.0

    def setup(self) -> "Sshd":
        self.root.mkdir(parents=True, exist_ok=True)
        for name in ("host_ed25519", "id_ed25519"):
            if not (self.root / name).exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.root / name)], check=True)
        (self.root / "authorized_keys").write_text((self.root / "id_ed25519.pub").read_text())
        os.chmod(self.root / "authorized_keys", 0o600)
        host_pub = (self.root / "host_ed25519.pub").read_text().split()
        (self.root / "known_hosts").write_text(f"[{self.host}]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        (self.root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress {self.host}\nHostKey {self.root / 'host_ed25519'}\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
            f"PidFile {self.root / 'sshd.pid'}\nMaxStartups 100\nMaxSessions 100\n")
        (self.root / "ssh_config").write_text(
            f"Host {self.alias}\n  HostName {self.host}\n  Port {self.port}\n  User root\n"
            f"  IdentityFile {self.root / 'id_ed25519'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.root / 'known_hosts'}\n  StrictHostKeyChecking yes\n  BatchMode yes\n"
            f"  ConnectTimeout 10\n  ControlPath {self.root / 'cm.sock'}\n")
        return self

    @property
    def ssh(self) -> list[str]:
        return ["ssh", "-F", str(self.root / "ssh_config")]

    def start(self) -> None:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.proc = start(["/usr/sbin/sshd", "-D", "-f", str(self.root / "sshd_config"), "-E", str(self.root / "sshd.log")])
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH"):
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start; see {self.root / 'sshd.log'}") from None
                time.sleep(0.05)
        # the client's ControlMaster, in the foreground (-N), so that its CPU is ours to wait4
        self.t_master = time.monotonic()
        self.master = start([*self.ssh, "-M", "-N", self.alias], log=self.root / "master.log")
        deadline = time.monotonic() + 15
        while not (self.root / "cm.sock").exists():
            if self.master.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ssh ControlMaster did not start: {(self.root / 'master.log').read_text()[-500:]}")
            time.sleep(0.05)

    def rsync(self, files: list[Path], remote_dir: Path, log: Path) -> Measured:
        """One rsync (+ its ssh mux client) of these files into remote_dir, push's options."""
        rsh = " ".join(self.ssh)
        argv = ["rsync", "-a", "--partial-dir=.rsync-partial", "--timeout=120", "--secluded-args", "-e", rsh,
                "--", *map(str, files), f"{self.alias}:{remote_dir}/"]
        return run_measured(argv, log=log)

    def finish(self) -> tuple[Measured, Measured]:
        """Close the master, let sshd reap its sessions, stop sshd: (client master, server) CPU."""
        assert self.master and self.proc
        self.master.send_signal(signal.SIGTERM)
        master = reap(self.master, ["ssh -M"], self.t_master)
        deadline = time.monotonic() + 15
        while children_of(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.proc.send_signal(signal.SIGTERM)
        server = reap(self.proc, ["sshd"], self.t0)
        self.master = self.proc = None
        (self.root / "cm.sock").unlink(missing_ok=True)
        return master, server
