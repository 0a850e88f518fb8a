"""Transfer benchmark on the emulated 300 ms RTT, 200 Mbit/s link of ``../shared/tools/wan``.

Needs root (it makes two network namespaces). In ONE run, on the same simulated exposure:

* ``push --streams N`` for N = 1, 4, 8: the exposure packed into K = N parts (default codec), sent
  by N :class:`~dwfhpc.push.SshTransport` streams exactly as ``dwfhpc push`` does (rsync into
  staging, remote move into the inbox, one ControlMaster per stream). "warm": the masters are
  already open, as they are all night; "cold": the first exposure, connection set-up included.
* the seed's way: the exposure as ONE tarball, one ``scp`` with a new connection;
* one plain ``rsync`` (new ssh connection) of that one tarball;
* the link's capacity: 8 raw TCP streams (no ssh), the ceiling anything can reach.

Writes ``benchmarks/results/transfer.md`` (times, MB/s, ratios). Usage::

    sudo python benchmarks/transfer.py [--ccds 1-30] [--cipher aes128-gcm@openssh.com] [--cc bbr]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
WAN = HERE.parents[1] / "shared" / "tools" / "wan"
NS_C, NS_S = "dwfbench-cli", "dwfbench-srv"
SIP = "10.77.0.2"
WAN_DIR = Path("/tmp/dwfbench-wan")


def sh(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def wan_env() -> dict:
    return {**os.environ, "NS_CLIENT": NS_C, "NS_SERVER": NS_S, "WAN_DIR": str(WAN_DIR)}


# --------------------------------------------------------------------------- inside the client namespace
def ssh_base(cipher: str | None) -> list[str]:
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={WAN_DIR / 'known_hosts'}", "-i", str(WAN_DIR / "userkey"),
            "-o", "IdentitiesOnly=yes"]
    return argv + (["-o", f"Ciphers={cipher}"] if cipher else [])


def push_streams(parts: list[tuple[Path, Path]], n: int, recv: Path, cipher: str | None, warm: bool) -> float:
    """Send K parts on n streams the way push does; returns seconds from first byte queued to last part in inbox."""
    from dwfhpc.config import TransportSettings
    from dwfhpc.push.transport import SshTransport, control_dir

    t = TransportSettings(kind="ssh", host=SIP, user="root", key=str(WAN_DIR / "userkey"),
                          known_hosts=str(WAN_DIR / "known_hosts"), staging=str(recv / "staging"),
                          inbox=str(recv / "inbox"), control_persist=120, timeout_seconds=300,
                          ssh_options=[f"Ciphers={cipher}"] if cipher else [])
    cm = control_dir(f"bench-{n}-{warm}-{time.time()}")
    transports = [SshTransport(t, None, i, cm) for i in range(n)]
    try:
        if warm:  # open every stream's ControlMaster first, as a running push has
            threads = [threading.Thread(target=tr.prepare) for tr in transports]
            [th.start() for th in threads]
            [th.join() for th in threads]
        queue = list(parts)
        lock = threading.Lock()
        errors: list[BaseException] = []

        def worker(tr):
            while True:
                with lock:
                    if not queue:
                        return
                    tar, man = queue.pop(0)
                try:
                    tr.deliver(tar, man)
                except BaseException as exc:  # noqa: BLE001 - reported after the run
                    errors.append(exc)
                    return

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(tr,)) for tr in transports]
        [th.start() for th in threads]
        [th.join() for th in threads]
        seconds = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return seconds
    finally:
        for tr in transports:
            tr.close()
        shutil.rmtree(cm, ignore_errors=True)


def capacity(total_bytes: int, streams: int = 8) -> float:
    """Seconds for ``streams`` raw TCP connections to carry total_bytes to a sink in the server namespace."""
    port = 5299
    sink = ("import socket,sys,threading\n"
            "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
            f"s.bind(('{SIP}',{port}));s.listen(64)\n"
            "def h(c):\n while c.recv(1<<20): pass\n c.sendall(b'k');c.close()\n"
            f"for _ in range({streams}):\n c,_=s.accept();threading.Thread(target=h,args=(c,)).start()\n")
    srv = subprocess.Popen(["ip", "netns", "exec", NS_S, sys.executable, "-c", sink])
    try:
        time.sleep(1.0)
        per = total_bytes // streams
        block = b"\0" * (1 << 20)

        def send():
            c = socket.create_connection((SIP, port))
            left = per
            while left > 0:
                left -= c.send(block[: min(len(block), left)])
            c.shutdown(socket.SHUT_WR)
            c.recv(1)
            c.close()

        t0 = time.perf_counter()
        threads = [threading.Thread(target=send) for _ in range(streams)]
        [th.start() for th in threads]
        [th.join() for th in threads]
        return time.perf_counter() - t0
    finally:
        srv.wait(timeout=30)


def measure(args) -> None:
    """Runs inside the client namespace; prints one JSON line."""
    spec = json.loads(Path(args.measure).read_text())
    recv = Path(spec["recv"])
    out: dict = {}
    cipher = args.cipher

    def clean():
        shutil.rmtree(recv, ignore_errors=True)
        (recv / "staging").mkdir(parents=True)
        (recv / "inbox").mkdir()

    for n in (1, 4, 8):
        parts = [(Path(a), Path(b)) for a, b in spec["parts"][str(n)]]
        for warm in (True, False):
            clean()
            key = f"push{n}_{'warm' if warm else 'cold'}"
            out[key] = push_streams(parts, n, recv, cipher, warm)
            print(f"{key}: {out[key]:.1f} s", file=sys.stderr, flush=True)
    one = spec["one"]
    clean()
    t0 = time.perf_counter()
    sh(["scp", "-O", "-q", *ssh_base(cipher)[1:], one, f"root@{SIP}:{recv / 'inbox'}/"])
    out["scp"] = time.perf_counter() - t0
    print(f"scp: {out['scp']:.1f} s", file=sys.stderr, flush=True)
    clean()
    t0 = time.perf_counter()
    sh(["rsync", "-a", "-e", " ".join(ssh_base(cipher)), one, f"root@{SIP}:{recv / 'inbox'}/"])
    out["rsync"] = time.perf_counter() - t0
    print(f"rsync: {out['rsync']:.1f} s", file=sys.stderr, flush=True)
    out["capacity"] = capacity(spec["bytes"])
    print(f"capacity: {out['capacity']:.1f} s", file=sys.stderr, flush=True)
    clean()
    print(json.dumps(out))


# --------------------------------------------------------------------------- driver (root namespace)
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ccds", default="1-60", help="CCDs of the simulated exposure (default 1-60)")
    ap.add_argument("--codec", default=None, help="default: the package default codec")
    ap.add_argument("--cipher", default=None, help="ssh cipher for every ssh-based method (e.g. aes128-gcm@openssh.com)")
    ap.add_argument("--cc", default=None, help="TCP congestion control in the client namespace (e.g. bbr)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/dwfbench-transfer"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "transfer.md")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        measure(args)
        return 0
    if os.geteuid() != 0:
        print("transfer.py: error: needs root (network namespaces)", file=sys.stderr)
        return 2
    from dwfhpc.codecs import DEFAULT_CODEC
    from dwfhpc.parts import pack_exposure
    from dwfhpc.simulate import parse_ccd_list, simulate_decam_exposure

    codec = args.codec or DEFAULT_CODEC
    ccds = parse_ccd_list(args.ccds)
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t = time.perf_counter()
    raw = simulate_decam_exposure(work / "raw", expnum=1200001, ccds=ccds)
    print(f"simulated {raw.name}: {len(ccds)} CCDs in {time.perf_counter() - t:.0f} s", flush=True)
    spec: dict = {"recv": str(work / "recv"), "parts": {}}
    for n in (1, 4, 8):
        parts = pack_exposure(raw, work / f"k{n}", codec=codec, parts=n, jobs=2)
        spec["parts"][str(n)] = [(str(p.tar), str(p.manifest)) for p in parts]
    one = Path(spec["parts"]["1"][0][0])  # K=1: the whole exposure as one tarball, the seed's unit
    spec["one"] = str(one)
    spec["bytes"] = one.stat().st_size
    (work / "spec.json").write_text(json.dumps(spec))
    print(f"packed: {spec['bytes'] / 1e6:.0f} MB ({codec})", flush=True)
    setup = subprocess.run(["bash", str(WAN / "setup-wan.sh")], env=wan_env(), capture_output=True, text=True)
    if setup.returncode != 0:
        print(f"transfer.py: error: setup-wan.sh failed: {setup.stderr.strip()[-400:]}", file=sys.stderr)
        return 2
    mode = setup.stdout.split("mode=")[-1].split()[0] if "mode=" in setup.stdout else "?"
    try:
        if args.cc:
            sh(["ip", "netns", "exec", NS_C, "sysctl", "-w", f"net.ipv4.tcp_congestion_control={args.cc}"])
            sh(["ip", "netns", "exec", NS_S, "sysctl", "-w", f"net.ipv4.tcp_congestion_control={args.cc}"])
        cmd = ["ip", "netns", "exec", NS_C, sys.executable, str(Path(__file__).resolve()), "--measure",
               str(work / "spec.json")] + (["--cipher", args.cipher] if args.cipher else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sys.stderr.write(proc.stderr)
        if proc.returncode != 0:
            print("transfer.py: error: measurement failed", file=sys.stderr)
            return 1
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["bash", str(WAN / "teardown-wan.sh")], env=wan_env(), capture_output=True)
    write_results(args, res, spec["bytes"], len(ccds), codec, mode)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def write_results(args, res: dict, nbytes: int, nccd: int, codec: str, mode: str) -> None:
    mb = nbytes / 1e6
    cap = mb / res["capacity"]
    rows = [("link capacity: 8 raw TCP streams (no ssh)", res["capacity"])]
    rows += [(f"push --streams {n} (K={n} parts), masters open", res[f"push{n}_warm"]) for n in (1, 4, 8)]
    rows += [(f"push --streams {n}, first exposure (connection set-up included)", res[f"push{n}_cold"]) for n in (1, 4, 8)]
    rows += [("seed: one tarball, one scp (new connection)", res["scp"]),
             ("one tarball, one plain rsync (new connection)", res["rsync"])]
    lines = [
        "# Transfer benchmark (emulated 300 ms RTT, 200 Mbit/s link)", "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: `python benchmarks/transfer.py {' '.join(sys.argv[1:])}`"
        .replace(" `", " `", 1),
        f"on a shared 2-core VM; link emulation `{mode}` (../shared/tools/wan). One simulated DECam exposure, "
        f"{nccd} CCDs, codec `{codec}`: {mb:.0f} MB to move. ssh cipher: {args.cipher or 'OpenSSH default'}; "
        f"TCP congestion control: {args.cc or 'namespace default'}.", "",
        "| method | seconds | MB/s | % of link capacity |", "|---|---:|---:|---:|"]
    for name, s in rows:
        lines.append(f"| {name} | {s:.1f} | {mb / s:.1f} | {100 * mb / s / cap:.0f}% |")
    r41 = res["push1_warm"] / res["push4_warm"]
    r4c = (mb / res["push4_warm"]) / cap
    lines += ["", "Ratios (same run):", "",
              f"- `--streams 4` vs `--streams 1` (masters open): **{r41:.2f}x** faster (target >= 3x)",
              f"- `--streams 4` throughput vs link capacity: **{100 * r4c:.0f}%** (target >= 85%)",
              f"- `--streams 8` vs `--streams 1`: {res['push1_warm'] / res['push8_warm']:.2f}x; "
              f"vs capacity {100 * (mb / res['push8_warm']) / cap:.0f}%",
              f"- `--streams 4` vs the seed's scp: {res['scp'] / res['push4_warm']:.2f}x faster; "
              f"vs one plain rsync: {res['rsync'] / res['push4_warm']:.2f}x", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    existing = args.out.read_text() if args.out.exists() else ""
    args.out.write_text("\n".join(lines) + ("\n\n---\n\n" + existing if existing else "\n"))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
