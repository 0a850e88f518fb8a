"""Transfer benchmark on the emulated 300 ms RTT, 200 Mbit/s link of ``tests/infra/wan``.

Needs root (it makes the two network namespaces ``dwfwan-cli`` / ``dwfwan-srv``: one emulated WAN per
machine, so it first waits while another run's WAN is up, and never tears one down it did not make).
In ONE run, on the same simulated exposure, every row of :data:`ROWS` through push's own
:class:`~dwfhpc.push.sender.Sender` (one ControlMaster per stream, opened beforehand as in a running
push): the baseline (one part per rsync call, move after it, K = N) for ``--streams 1`` and ``4``,
then each lever alone and together: (a) a stream's share of the queued parts in one rsync call
(``transport.batch_parts``), (b) the move of a batch pipelined with the next rsync
(``transport.pipeline_moves``), (c) end to end: each part sent as soon as it is packed, K > N, (d) one
long-lived ``dwfhpc receive`` per stream fed part after part (``transport.stream``); and the link's
capacity: 8 raw TCP streams (no ssh), the ceiling anything can reach.

Writes ``benchmarks/results/transfer.md`` (times, MB/s, % of capacity, ratios, load average). Usage::

    sudo python benchmarks/transfer.py [--ccds 1-60] [--rows base1,base4,ab] [--keep] [--cipher ...] [--cc bbr]
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

from common.wan import wanlink  # the vendored emulator: namespaces dwfwan-cli / dwfwan-srv, one WAN per machine

HERE = Path(__file__).resolve().parent

NS_C, NS_S = wanlink.NS_CLIENT, wanlink.NS_SERVER
SIP = "10.77.0.2"
WAN_DIR = Path("/tmp/dwfxfer-wan")
#: lever (d): the far namespace's sshd runs this checkout's dwfhpc with this Python
RECEIVER = f"env PYTHONPATH={HERE.parent} {sys.executable} -m dwfhpc"


def sh(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


# --------------------------------------------------------------------------- inside the client namespace
def _transports(n: int, recv: Path, cipher: str | None, *, batch: int, pipeline: bool, stream: bool = False):
    from dwfhpc.config import TransportSettings
    from dwfhpc.link.rsync import SshTransport
    from dwfhpc.link.ssh import control_dir
    from dwfhpc.link.stream import StreamTransport

    t = TransportSettings(kind="ssh", host=SIP, user="root", key=str(WAN_DIR / "userkey"),
                          known_hosts=str(WAN_DIR / "known_hosts"), staging=str(recv / "staging"),
                          inbox=str(recv / "inbox"), control_persist=120, timeout_seconds=300,
                          ssh_options=[f"Ciphers={cipher}"] if cipher else [], batch_parts=batch,
                          pipeline_moves=pipeline, retries=2, backoff_seconds=1, stream=stream,
                          receiver_command=RECEIVER)
    cm = control_dir(f"bench-{n}-{time.time()}")
    kind = StreamTransport if stream else SshTransport
    return t, cm, [kind(t, None, i, cm) for i in range(n)]


def push_streams(raw: Path, n: int, recv: Path, work: Path, cipher: str | None, *, k: int, batch: int,
                 pipeline: bool, pack: str = "before", codec: str = "rice", stream: bool = False) -> float:
    """One exposure through push's own :class:`~dwfhpc.push.sender.Sender` on n streams (masters open).

    ``pack``: "before" - the K parts are packed beforehand and all queued at once (transfer only: seconds
    from queueing to the last part confirmed in the inbox); "then" - packed, then sent (seconds from the
    start of packing); "overlap" - each part queued as soon as it is packed, as ``dwfhpc push`` does.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from types import SimpleNamespace

    from dwfhpc.parts import pack_exposure
    from dwfhpc.push.journal import Journal
    from dwfhpc.push.order import Flight, Policy
    from dwfhpc.push.sender import Retry, Sender
    from dwfhpc.push.view import PushView, StreamStats, ViewState

    t, cm, transports = _transports(n, recv, cipher, batch=batch, pipeline=pipeline, stream=stream)
    out = work / f"k{k}" if pack == "before" else work / f"out-{n}-{k}-{pack}"
    if pack != "before":
        shutil.rmtree(out, ignore_errors=True)
    jpath = work / f"journal-{time.time()}.sqlite"
    pool = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("forkserver"))
    try:
        threads = [threading.Thread(target=tr.prepare) for tr in transports]  # open every master (and with
        [th.start() for th in threads]                                        # (d) every receiver) first, as a
        # running push has them
        [th.join() for th in threads]
        pool.submit(int, 0).result()  # the pool is warm in a running push too
        journal = Journal(jpath)
        expid = f"DECam_{int(raw.name.split('_')[1][:8]):08d}"
        info = SimpleNamespace(expid=expid, instrument="decam", expnum=int(expid[6:]), night="", obstype="object",
                               kind="science")
        journal.add_file_to_exposure(info, str(raw), time.time())
        journal.mark_packing(expid, nparts=k)
        flight = Flight(Policy("parallel", n))
        flight.expids.add(expid)
        state = ViewState(streams=[StreamStats() for _ in range(n)])
        view = PushView(state, quiet=True, live=False)
        stop = threading.Event()
        sender = Sender(transports, flight, journal, view, state, Retry(t, journal, view, stop), out, stop,
                        once=True, keep_sent_parts=True)

        def queue(part):  # as push's packer does (K is at most the number of CCDs)
            journal.set_exposure(expid, nparts=part.n)
            size = part.tar.stat().st_size
            journal.part_packed(expid, part.k, part.n, part.tar.name, part.manifest.name, size, time.time())
            flight.enqueue(journal.exposure(expid), part.k, part.n, size)

        def packed(parts):
            if pack == "then":
                [queue(p) for p in parts]

        t0 = time.perf_counter()
        if pack == "before":  # packed by the driver (keep_sent_parts: reused by every row)
            for man in sorted(out.glob("*.manifest.json")):
                m = json.loads(man.read_text())
                queue(SimpleNamespace(k=m["part"], n=m["parts"], tar=out / m["tar_name"], manifest=man))
        sender.start()
        if pack != "before":
            packed(pack_exposure(raw, out, codec=codec, parts=k, pool=pool,
                                 progress=queue if pack == "overlap" else None))
        deadline = time.monotonic() + 900
        while expid in flight and flight.outcome.failed == 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not delivered after 900 s: {journal.parts(expid)}")
            time.sleep(0.02)
        seconds = time.perf_counter() - t0
        stop.set()
        sender.join(timeout=30)
        if flight.outcome.failed:
            raise RuntimeError(f"push failed: {journal.parts(expid, 'failed')}")
        journal.close()
        return seconds
    finally:
        pool.shutdown(wait=True)
        for tr in transports:
            tr.close()
        shutil.rmtree(cm, ignore_errors=True)
        if pack != "before":
            shutil.rmtree(out, ignore_errors=True)


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


#: (key, label, streams, K parts, transport.batch_parts, transport.pipeline_moves, packing, transport.stream)
ROWS = [
    ("base1", "baseline `--streams 1`: K=1, one part per rsync call, move after it", 1, 1, 1, False, "before", False),
    ("base4", "baseline `--streams 4`: K=4, one part per rsync call, move after it", 4, 4, 1, False, "before", False),
    ("k16", "K=16 parts, no lever (one part per call, move after it)", 4, 16, 1, False, "before", False),
    ("a", "(a) K=16, a stream's share of the queue in one rsync call (batch_parts 8)", 4, 16, 8, False, "before", False),
    ("b", "(b) K=16, one part per call, move pipelined with the next rsync", 4, 16, 1, True, "before", False),
    ("ab", "(a)+(b) K=16, new defaults", 4, 16, 8, True, "before", False),
    ("ab4", "(a)+(b) K=4, new defaults", 4, 4, 8, True, "before", False),
    ("ab1", "(a)+(b) `--streams 1`, K=16, new defaults", 1, 16, 8, True, "before", False),
    ("c_then", "(c) end to end, baseline: K=4 packed, then sent", 4, 4, 1, False, "then", False),
    ("c4", "(c) end to end: K=4, each part sent as soon as packed, (a)+(b)", 4, 4, 8, True, "overlap", False),
    ("c16", "(c) end to end: K=16, each part sent as soon as packed, (a)+(b)", 4, 16, 8, True, "overlap", False),
    ("c16_1", "(c) end to end `--streams 1`: K=16, sent as packed, (a)+(b)", 1, 16, 8, True, "overlap", False),
    ("d1", "(d) `--streams 1`, K=4, one long-lived `dwfhpc receive` per stream (transport.stream)", 1, 4, 8, True,
     "before", True),
    ("d4", "(d) K=4, one long-lived `dwfhpc receive` per stream", 4, 4, 8, True, "before", True),
    ("d16", "(d) K=16, one long-lived `dwfhpc receive` per stream", 4, 16, 8, True, "before", True),
    ("dc16", "(d)+(c) end to end: K=16, each part streamed as soon as packed", 4, 16, 8, True, "overlap", True),
]


def measure(args) -> None:
    """Runs inside the client namespace; prints one JSON line."""
    spec = json.loads(Path(args.measure).read_text())
    recv, work, raw = Path(spec["recv"]), Path(spec["work"]), Path(spec["raw"])
    out: dict = {}
    cipher = args.cipher

    def clean():
        shutil.rmtree(recv, ignore_errors=True)
        (recv / "staging").mkdir(parents=True)
        (recv / "inbox").mkdir()

    out["capacity"] = capacity(spec["bytes"])
    print(f"capacity: {out['capacity']:.1f} s", file=sys.stderr, flush=True)
    for key, _, n, k, batch, pipeline, pack, stream in ROWS:
        if args.rows and key not in args.rows.split(","):
            continue
        clean()
        out[key] = push_streams(raw, n, recv, work, cipher, k=k, batch=batch, pipeline=pipeline, pack=pack,
                                codec=spec["codec"], stream=stream)
        print(f"{key}: {out[key]:.1f} s", file=sys.stderr, flush=True)
    clean()
    print(json.dumps(out))


def wan_busy() -> list[str]:
    """Emulated WANs already up on this machine (someone else's run: wait, never tear it down)."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    return [n for n in names if n.startswith(("dwfwan-", "dwfbench-"))]


# --------------------------------------------------------------------------- driver (root namespace)
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ccds", default="1-60", help="CCDs of the simulated exposure (default 1-60)")
    ap.add_argument("--codec", default=None, help="default: the package default codec")
    ap.add_argument("--cipher", default=None, help="ssh cipher for every ssh-based method (e.g. aes128-gcm@openssh.com)")
    ap.add_argument("--cc", default=None, help="TCP congestion control in the client namespace (e.g. bbr)")
    ap.add_argument("--rows", default=None, help=f"comma-separated subset of: {','.join(r[0] for r in ROWS)}")
    ap.add_argument("--wait", type=int, default=30, help="minutes to wait for another run's WAN to go away")
    ap.add_argument("--work", type=Path, default=Path("/tmp/dwfbench-transfer"))
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) the simulated exposure and its parts")
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
    spec_path = work / "spec.json"
    spec: dict = json.loads(spec_path.read_text()) if args.keep and spec_path.exists() else {}
    if spec.get("ccds") != args.ccds or spec.get("codec") != codec:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        t = time.perf_counter()
        raw = simulate_decam_exposure(work / "raw", expnum=1200001, ccds=ccds)
        print(f"simulated {raw.name}: {len(ccds)} CCDs in {time.perf_counter() - t:.0f} s", flush=True)
        spec = {"recv": str(work / "recv"), "work": str(work), "raw": str(raw), "ccds": args.ccds, "codec": codec}
        for k in sorted({r[3] for r in ROWS if r[6] == "before"}):
            pack_exposure(raw, work / f"k{k}", codec=codec, parts=k, jobs=2)
        spec["bytes"] = sum(f.stat().st_size for f in (work / "k1").glob("*.tar"))
        spec_path.write_text(json.dumps(spec))
    print(f"packed: {spec['bytes'] / 1e6:.0f} MB ({codec})", flush=True)
    for _ in range(args.wait):
        busy = wan_busy()
        if not busy:
            break
        print(f"another emulated WAN is up ({', '.join(busy)}): waiting a minute", flush=True)
        time.sleep(60)
    else:
        if wan_busy():
            print("transfer.py: error: another emulated WAN is still up", file=sys.stderr)
            return 3
    load = os.getloadavg()
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: still tear our WAN down (finally below)
    WAN_DIR.mkdir(parents=True, exist_ok=True)
    link = wanlink.setup(WAN_DIR)
    try:
        if args.cc:
            sh(["ip", "netns", "exec", NS_C, "sysctl", "-w", f"net.ipv4.tcp_congestion_control={args.cc}"])
            sh(["ip", "netns", "exec", NS_S, "sysctl", "-w", f"net.ipv4.tcp_congestion_control={args.cc}"])
        cmd = ["ip", "netns", "exec", NS_C, sys.executable, str(Path(__file__).resolve()), "--measure",
               str(spec_path)] + (["--cipher", args.cipher] if args.cipher else []) + \
            (["--rows", args.rows] if args.rows else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sys.stderr.write(proc.stderr)
        if proc.returncode != 0:
            print(f"transfer.py: error: measurement failed (exit {proc.returncode}): {proc.stdout[-2000:]}", file=sys.stderr)
            return 1
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        wanlink.teardown(WAN_DIR)
    load = (load, os.getloadavg())
    write_results(args, res, spec["bytes"], len(ccds), codec, link.mode, load)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def write_results(args, res: dict, nbytes: int, nccd: int, codec: str, mode: str, load) -> None:
    mb = nbytes / 1e6
    cap = mb / res["capacity"]
    rows = [("link capacity: 8 raw TCP streams (no ssh)", res["capacity"])]
    rows += [(label, res[key]) for key, label, *_ in ROWS if key in res]
    lines = [
        "# Transfer benchmark (emulated 300 ms RTT, 200 Mbit/s link)", "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: `python benchmarks/transfer.py {' '.join(sys.argv[1:])}`",
        f"on a shared 2-core VM (load average {load[0][0]:.1f} before, {load[1][0]:.1f} after); link emulation "
        f"`{mode}` (tests/infra/wan). One simulated DECam exposure, {nccd} CCDs, codec `{codec}`: {mb:.0f} MB "
        f"to move. ssh cipher: {args.cipher or 'OpenSSH default'}; TCP congestion control: "
        f"{args.cc or 'namespace default'}. Every push row: push's own Sender on N streams, masters open; "
        "rows without \"end to end\" time the transfer of parts packed beforehand (all queued at once), "
        "\"end to end\" rows time packing + transfer from the start of packing.", "",
        "| method | seconds | MB/s | % of link capacity | vs baseline `--streams 1` |", "|---|---:|---:|---:|---:|"]
    for name, s in rows:
        vs = f"{res['base1'] / s:.2f}x" if "base1" in res and not name.startswith("link") else ""
        lines.append(f"| {name} | {s:.1f} | {mb / s:.1f} | {100 * mb / s / cap:.0f}% | {vs} |")
    lines += ["", "Ratios (same run):", ""]

    def ratio(a, b, what):
        if a in res and b in res:
            lines.append(f"- {what}: **{res[b] / res[a]:.2f}x**; `{a}` at {100 * (mb / res[a]) / cap:.0f}% of capacity")

    ratio("base4", "base1", "baseline `--streams 4` (K=4) vs `--streams 1` (K=1)")
    ratio("ab", "ab1", "new defaults, `--streams 4` vs `--streams 1` (K=16, transfer only)")
    ratio("ab", "base1", "new defaults `--streams 4` (K=16) vs baseline `--streams 1` (K=1)")
    ratio("c16", "c16_1", "end to end (packing overlapped), `--streams 4` vs `--streams 1` (K=16)")
    ratio("c16", "c_then", "end to end, K=16 sent as packed vs K=4 packed then sent (both 4 streams)")
    ratio("d4", "d1", "(d) streamed, `--streams 4` vs `--streams 1` (K=4)")
    ratio("d4", "base1", "(d) streamed `--streams 4` (K=4) vs baseline `--streams 1` (K=1)")
    ratio("d16", "base1", "(d) streamed `--streams 4` (K=16) vs baseline `--streams 1` (K=1)")
    ratio("dc16", "c16", "end to end, K=16: (d) streamed vs rsync (a)+(b)")
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    existing = args.out.read_text() if args.out.exists() else ""
    args.out.write_text("\n".join(lines) + ("\n\n---\n\n" + existing if existing else "\n"))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
