#!/usr/bin/env python3
"""delayline.py - userspace WAN emulator for kernels without sch_netem.
Attaches to two existing TUN devices living in two network namespaces, forwards
every IP packet between them after a fixed one-way delay, and optionally paces
each direction to RATE bit/s with a bounded queue (tail drop) like a bottleneck link.
usage: delayline.py NS_A TUN_A NS_B TUN_B DELAY_MS RATE_MBIT QUEUE_MS

Vendored from ../shared/tools/wan/delayline.py; changed so that a link cut (`ip link set TUN down`)
does not kill it: a write to a TUN device that is down fails with EIO, and such a packet is now
dropped (counted) like a tail drop instead of ending the process, so the link works again once
the device is brought back up.
"""
import collections, ctypes, fcntl, os, select, struct, sys, time

CLONE_NEWNET, TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x40000000, 0x400454CA, 0x0001, 0x1000
libc = ctypes.CDLL(None, use_errno=True)

def setns(ns):
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
    finally:
        os.close(fd)

def tun_attach(ns, name):
    setns(ns)  # TUNSETIFF looks the device up in the caller's netns
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd

ns_a, tun_a, ns_b, tun_b = sys.argv[1:5]
delay = float(sys.argv[5]) / 1000.0
rate = float(sys.argv[6]) * 1e6 / 8.0 if len(sys.argv) > 6 and float(sys.argv[6]) > 0 else 0.0  # bytes/s
qmax = float(sys.argv[7]) / 1000.0 if len(sys.argv) > 7 else 0.5   # max queueing delay before tail drop
fa, fb = tun_attach(ns_a, tun_a), tun_attach(ns_b, tun_b)
peer = {fa: fb, fb: fa}
lines = {fa: collections.deque(), fb: collections.deque()}   # packets read from key fd, due time
busy = {fa: 0.0, fb: 0.0}      # serialisation: link busy until
stats = {"fwd": 0, "drop": 0}
mono = time.monotonic
while True:
    now = mono()
    nxt = min((q[0][0] for q in lines.values() if q), default=None)
    timeout = None if nxt is None else max(0.0, nxt - now)
    r, _, _ = select.select([fa, fb], [], [], timeout)
    now = mono()
    for fd in r:
        q = lines[fd]
        for _ in range(256):
            try:
                pkt = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError:  # device going down under us
                break
            if rate:
                start = max(now, busy[fd])
                if start - now > qmax:          # bottleneck buffer full -> tail drop
                    stats["drop"] += 1
                    continue
                busy[fd] = start + len(pkt) / rate
                q.append((busy[fd] + delay, pkt))
            else:
                q.append((now + delay, pkt))
    for fd, q in lines.items():
        out = peer[fd]
        while q and q[0][0] <= now:
            _, pkt = q.popleft()
            try:
                os.write(out, pkt)
                stats["fwd"] += 1
            except OSError:  # BlockingIOError (queue full), EIO (device down: link cut)
                stats["drop"] += 1
