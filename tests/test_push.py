"""dwfhpc push on real parts: real FITS, real rsync, and (marker ``ssh``) a real sshd with host keys checked."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dwfhpc.config import load_site
from dwfhpc.errors import TransferError
from dwfhpc.link import check_part_file_name, classify
from dwfhpc.link.rsync import SshTransport
from dwfhpc.link.ssh import control_dir
from dwfhpc.push import Journal, LocalTransport, Push, PushOptions, parse_list_only
from dwfhpc.push.order import Policy
from dwfhpc.push.watcher import Watcher, is_temporary
from dwfhpc.simulate import simulate_decam_exposure, simulate_hsc_visit

FIRST = 1100001


@pytest.fixture(scope="module")
def raw_cache(tmp_path_factory) -> list[Path]:
    """Six simulated 2-CCD DECam exposures (made once; tests copy them into their raw folder)."""
    out = tmp_path_factory.mktemp("rawcache")
    return [simulate_decam_exposure(out, expnum=FIRST + i, ccds=[1, 2], seed=i,
                                    obstype="zero" if i == 0 else "object") for i in range(6)]


def drop(raw_cache: list[Path], raw_dir: Path, indices) -> list[Path]:
    """Copy exposures into the raw folder the way a writer does: temporary name, then rename."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for i in indices:
        src = raw_cache[i]
        tmp = raw_dir / f".{src.name}.tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, raw_dir / src.name)
        out.append(raw_dir / src.name)
    return out


def site_for(work: Path, sshd=None, **push) -> "object":
    push_cfg = {"stable_seconds": 0, "poll_seconds": 0.2, "incomplete_timeout": 3, "parts": 2, "streams": 2,
                "jobs": 1, **push}
    transport = {"retries": 3, "backoff_seconds": 0.2, "timeout_seconds": 20,
                 "staging": str(work / "cluster" / "staging"), "inbox": str(work / "cluster" / "inbox")}
    if sshd is not None:
        transport.update(kind="ssh", host=sshd.host, port=sshd.port, user=sshd.user, key=str(sshd.key),
                         known_hosts=str(sshd.known_hosts), control_persist=30, retries=8, backoff_seconds=0.5,
                         backoff_max=4)
    return load_site("local", workdir=work, overrides={"push": push_cfg, "transport": transport})


def run_push(site, *, mode="parallel", streams=2, nbundle=4, exp_min=0, parts=2, once=True):
    opts = PushOptions(streams=streams, mode=mode, nbundle=nbundle, exp_min=exp_min, codec="rice", parts=parts,
                       once=once, quiet=True, live=False)
    return Push(site, opts).run()


def inbox_files(site) -> list[str]:
    inbox = site.path(site.transport.inbox)
    return sorted(p.name for p in inbox.iterdir() if not p.name.startswith("."))


def journal_rows(site, sql: str) -> list[tuple]:
    with sqlite3.connect(site.path(site.push.journal)) as db:
        return db.execute(sql).fetchall()


def expected_names(expnums, k=2) -> list[str]:
    names = []
    for e in expnums:
        for i in range(1, k + 1):
            names += [f"DECam_{e:08d}.p{i}of{k}.manifest.json", f"DECam_{e:08d}.p{i}of{k}.tar"]
    return sorted(names)


# --------------------------------------------------------------------------- units on real files
def test_part_names_are_checked_before_any_command():
    assert check_part_file_name("DECam_01100001.p1of4.tar")
    assert check_part_file_name("HSC_0903334.p2of2.manifest.json")
    for bad in ("x; rm -rf ~.p1of2.tar", "$(id).p1of2.tar", "../DECam_1.p1of2.tar", "DECam_1.tar", "a b.p1of2.tar",
                "DECam_01100001.p1of4.tar\n", "DECam_01100001.p1of4.manifest.json\n"):  # \Z: no trailing newline
        with pytest.raises(TransferError):
            check_part_file_name(bad)


def test_retryable_classification():
    assert classify(255, "ssh: connect to host x port 22: Connection refused")
    assert classify(23, "") and classify(30, "") and classify(12, "") and classify(10, "") and classify(35, "")
    assert not classify(1, "rsync: syntax or usage error")
    assert not classify(11, "No space left on device")
    assert not classify(255, "Host key verification failed.\r\nrsync: connection unexpectedly closed")  # no retry heals it
    assert not classify(255, "root@h: Permission denied (publickey).")


def test_rsync_command_lines_built_by_sysrsync(tmp_path, monkeypatch):
    """Both files after ``--``, the destination a folder, our ``-e ssh`` with host keys checked; no shell."""
    from dwfhpc.config import TransportSettings
    from dwfhpc.link import rsync as tmod

    (tmp_path / "known_hosts").write_text("")
    t = TransportSettings(kind="ssh", host="recv.example", user="dwf", known_hosts=str(tmp_path / "known_hosts"),
                          staging="/data/staging", inbox="/data/inbox", bwlimit_kbps=100)
    calls: list[list[str]] = []

    def fake_run(argv, timeout, what):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "-rw-r--r--  5 2025/01/01 00:00:00 A.p1of1.tar\n", "")

    tr = SshTransport(t, None, 1, tmp_path)
    monkeypatch.setattr(tr, "run", fake_run)  # every command of an ssh transport goes through SshLink.run
    tar, man = tmp_path / "DECam_01100001.p1of2.tar", tmp_path / "DECam_01100001.p1of2.manifest.json"
    man.write_text(json.dumps({"tar_sha256": "f" * 64}))
    tr.deliver(tar, man)
    assert tr.listing() == {"A.p1of1.tar": 5}
    rsync, move, listing = calls
    assert rsync[0] == "rsync" and rsync[-4:] == ["--", str(tar), str(man), "dwf@recv.example:/data/staging/"]
    assert {"-a", "--partial-dir=.rsync-partial", "--secluded-args", "--bwlimit=100",
            "--compare-dest=/data/inbox"} <= set(rsync)
    rsh = rsync[rsync.index("-e") + 1]
    assert "StrictHostKeyChecking=yes" in rsh and f"ControlPath={tmp_path}/cm-%C-1" in rsh
    assert move[0] == "ssh" and move[-2] == "dwf@recv.example"
    assert listing[0] == "rsync" and "--list-only" in listing and "dwf@recv.example:/data/inbox/" in listing
    assert tmod.rsync_command([tar, man], "/", ["-a"])[-1] == "/"
    assert tmod.LocalTransport(t, tmp_path / "s", tmp_path / "i").prepare() is None  # base: nothing to prepare


def test_batch_one_rsync_call_one_move_each_tarball_before_its_manifest(tmp_path, monkeypatch):
    """Several parts: ONE rsync call with all their files, ONE remote move: tar1 man1 tar2 man2 in that order."""
    from dwfhpc.config import TransportSettings
    (tmp_path / "known_hosts").write_text("")
    t = TransportSettings(kind="ssh", host="recv.example", known_hosts=str(tmp_path / "known_hosts"),
                          staging="/data/staging", inbox="/data/inbox")
    calls: list[list[str]] = []
    tr = SshTransport(t, None, 0, tmp_path)
    monkeypatch.setattr(tr, "run", lambda argv, timeout, what: calls.append(argv))
    parts = [(tmp_path / f"DECam_01100001.p{k}of3.tar", tmp_path / f"DECam_01100001.p{k}of3.manifest.json")
             for k in (1, 2, 3)]
    for k, (_, man) in enumerate(parts):
        man.write_text(json.dumps({"tar_sha256": f"{k}" * 64}))
    tr.send(parts)
    tr.move(parts)
    rsync, move = calls
    assert rsync[-8:] == ["--", *[str(f) for p in parts for f in p], "recv.example:/data/staging/"]
    names = [f.name for p in parts for f in p]
    assert f"for f in {' '.join(names)};" in move[-1]  # each tarball moved before its manifest
    # every staged tarball is checked against its manifest's sha256 before anything is moved
    checks = [move[-1].index(f"echo {k}" + f"{k}" * 63) for k in range(3)]
    assert all(c < move[-1].index("for f in") for c in checks) and move[-1].count("sha256sum -c --status") == 3
    with pytest.raises(TransferError):
        tr.send([(tmp_path / "x;rm.p1of1.tar", tmp_path / "x;rm.p1of1.manifest.json")])
    assert len(calls) == 2  # a bad name anywhere in a batch: nothing run


def test_streams_take_equal_shares_of_the_queue():
    """16 parts queued, 4 idle streams, batch_parts 8: each stream takes 4; batch_parts 1: one each."""
    from types import SimpleNamespace

    from dwfhpc.push.order import Flight
    from dwfhpc.push.sender import Sender

    for batch_parts, want in ((8, [4, 4, 4, 4]), (3, [3, 3, 3, 3]), (1, [1, 1, 1, 1])):
        flight = Flight(Policy("parallel", 4))
        exp = SimpleNamespace(expid="DECam_01100001", expnum=1100001, t_complete=0.0)
        for k in range(1, 17):
            flight.enqueue(exp, k, 16, 10)
        retry = SimpleNamespace(settings=SimpleNamespace(batch_parts=batch_parts, pipeline_moves=True))
        sender = Sender([SimpleNamespace(stream=i) for i in range(4)], flight, None, None, None, retry, Path("."),
                        threading.Event(), once=True, keep_sent_parts=False)
        got = [flight.queue.get_batch(0.1, share=sender._share) for _ in range(4)]  # none done yet: all busy
        assert [len(b) for b in got] == want
        assert [qp.k for qp in got[0]] == list(range(1, want[0] + 1))  # priority order kept


def test_one_retry_helper_backs_off_and_gives_up(tmp_path):
    import io

    from dwfhpc.config import TransportSettings
    from dwfhpc.push.sender import Retry
    from dwfhpc.push.view import PushView, ViewState

    t = TransportSettings(retries=2, backoff_seconds=0.01, backoff_max=0.02)
    j = Journal(tmp_path / "j.sqlite")
    out = io.StringIO()
    stop = threading.Event()
    retry = Retry(t, j, PushView(ViewState(streams=[]), live=False, out=out), stop)
    tries = []

    def flaky(fail: int, retryable: bool = True):
        def fn():
            tries.append(1)
            if len(tries) <= fail:
                raise TransferError("connection refused", retryable=retryable)
            return "ok"
        return fn

    assert retry(flaky(2), "listing", limit=2) == "ok" and len(tries) == 3
    tries.clear()
    with pytest.raises(TransferError):
        retry(flaky(3), "listing", limit=2)
    assert len(tries) == 3
    tries.clear()
    assert retry(flaky(5), "DECam_1.p1of2.tar", limit=None, expid="DECam_1", part="DECam_1.p1of2.tar") == "ok"
    tries.clear()
    with pytest.raises(TransferError):
        retry(flaky(1, retryable=False), "listing", limit=2)
    assert len(tries) == 1
    tries.clear()
    stop.set()
    with pytest.raises(TransferError):
        retry(flaky(1), "listing", limit=None)
    assert len(tries) == 1
    j.close()
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        delays = [r[0] for r in db.execute("SELECT message FROM events WHERE expid='DECam_1' ORDER BY t")]
    assert [d.split(" in ")[1].split(" s")[0] for d in delays] == ["0.01", "0.02", "0.02", "0.02", "0.02"]
    assert "event=retry what=listing attempt=1" in out.getvalue() and "part=DECam_1.p1of2.tar attempt=5" in out.getvalue()


def test_temporaries_ignored():
    assert is_temporary(".DECam_1.fits.fz.x1.tmp") and is_temporary("DECam_1.fits.fz.tmp")
    assert not is_temporary("DECam_01100001.fits.fz")


def test_rsync_list_only_parsed(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "A.p1of2.tar").write_bytes(b"x" * 1234567)
    (tmp_path / "d" / ".hidden").write_bytes(b"y")
    (tmp_path / "d" / "sub").mkdir()
    (tmp_path / "d" / "sub" / "B.p1of1.tar").write_bytes(b"z" * 5)
    out = subprocess.run(["rsync", "--list-only", "-r", f"{tmp_path / 'd'}/"], capture_output=True, text=True,
                         check=True).stdout
    assert parse_list_only(out) == {"A.p1of2.tar": 1234567, "B.p1of1.tar": 5}


def test_policy_orders():
    from dwfhpc.push.journal import ExposureRow

    def row(n, t):
        return ExposureRow(f"E{n}", "decam", n, "", "object", "science", (), None, None, "complete", None, 0,
                           t, t, None, None, None)

    rows = [row(1, 10.0), row(2, 11.0), row(3, 12.0), row(4, 13.0), row(5, 14.0)]
    assert [r.expnum for r in Policy("serial", 4).select(rows, 0)] == [5]
    assert Policy("serial", 4).select(rows, 1) == []
    assert [r.expnum for r in Policy("batch", 4, nbundle=2).select(rows, 0)] == [5, 4]
    assert [r.expnum for r in Policy("parallel", 3).select(rows, 1)] == [1, 2]
    assert [r.expnum for r in Policy("end-of-night", 8, exp_min=3).select(rows, 0)] == [4, 5]


def test_watcher_waits_for_stable_complete_file_and_fails_truncated(tmp_path, raw_cache):
    """A file still growing is not taken; one still truncated after the timeout is failed once, with the reason."""
    raw = tmp_path / "raw"
    raw.mkdir()
    j = Journal(tmp_path / "j.sqlite")
    w = Watcher(raw, j, patterns=["DECam_*.fits.fz"], stable_seconds=0, incomplete_timeout=0.5)
    half = raw / "DECam_01100009.fits.fz"
    data = raw_cache[1].read_bytes()
    half.write_bytes(data[: len(data) // 2])
    (raw / ".DECam_01100010.fits.fz.tmp").write_bytes(data)
    r = w.poll()
    assert r.ready == [] and r.pending == 1 and r.failed == []
    time.sleep(0.6)
    r = w.poll()
    assert r.ready == [] and len(r.failed) == 1 and "truncated" in r.failed[0][1]
    assert w.poll().failed == []  # reported once, never retried
    drop(raw_cache, raw, [1])
    assert w.poll().ready == [f"DECam_{FIRST + 1:08d}"]
    assert j.file_state(str(half))["state"] == "failed"
    j.close()


# --------------------------------------------------------------------------- local transport
def test_local_parallel_all_obstypes_and_status(tmp_path, raw_cache):
    site = site_for(tmp_path)
    drop(raw_cache, site.path(site.push.raw_dir), range(3))
    out = run_push(site)
    assert out.delivered == 3 and out.failed == 0
    assert inbox_files(site) == expected_names(range(FIRST, FIRST + 3))
    assert journal_rows(site, "SELECT DISTINCT obstype FROM exposures ORDER BY obstype") == [("object",), ("zero",)]
    assert not list(site.path(site.push.outgoing_dir).glob("*.tar"))  # removed only after confirmed delivery
    lat = journal_rows(site, "SELECT t_complete <= t_pack_start, t_pack_start <= t_packed, t_packed <= t_delivered"
                             " FROM exposures")
    assert all(all(x) for x in lat)
    # a second run has nothing to do and sends nothing again
    before = {p.name: p.stat().st_ino for p in site.path(site.transport.inbox).iterdir()}
    assert run_push(site).delivered == 0
    assert {p.name: p.stat().st_ino for p in site.path(site.transport.inbox).iterdir()} == before
    status = subprocess.run([sys.executable, "-m", "dwfhpc.cli", "push", "--workdir", str(tmp_path), "--status"],
                            capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert "delivered 3" in status.stdout and "confirmed 6" in status.stdout


def test_failed_pipelined_move_resends_the_batch_each_part_confirmed_once(tmp_path, raw_cache, monkeypatch):
    """A move that finds its batch gone from staging: the whole batch is sent again, then confirmed once."""
    from dwfhpc.push import runner

    moves: list[list[str]] = []

    class Flaky(LocalTransport):
        def move(self, parts):
            moves.append([t.name for t, _ in parts])
            if len(moves) == 1:  # staging emptied under us (say, a receiver-side clean-up)
                for t, m in parts:
                    (self.staging / t.name).unlink()
                    (self.staging / m.name).unlink()
            super().move(parts)

    def transports(site, streams, key):
        t = site.transport
        return [Flaky(t, site.path(t.staging), site.path(t.inbox), i) for i in range(streams)]

    monkeypatch.setattr(runner, "make_transports", transports)
    site = site_for(tmp_path)
    assert site.transport.pipeline_moves and site.transport.batch_parts > 1  # the defaults
    drop(raw_cache, site.path(site.push.raw_dir), range(2))
    out = run_push(site)
    assert out.delivered == 2 and out.failed == 0
    assert inbox_files(site) == expected_names(range(FIRST, FIRST + 2))
    assert moves.count(moves[0]) == 2  # the vanished batch moved again, after a new rsync
    assert journal_rows(site, "SELECT COUNT(*), SUM(state='confirmed') FROM parts") == [(4, 4)]
    assert journal_rows(site, "SELECT MAX(attempts) FROM parts") == [(1,)]  # one send attempt; the resend is the move's


def test_local_hsc_visit_grouped(tmp_path):
    site = site_for(tmp_path, visit_quiet_seconds=0.5)
    simulate_hsc_visit(site.path(site.push.raw_dir), visit=903334, ccds=[0, 1])
    out = run_push(site)
    assert out.delivered == 1
    assert journal_rows(site, "SELECT expid, json_array_length(files), nparts FROM exposures") == [("HSC_0903334", 2, 2)]
    assert len(inbox_files(site)) == 4


def _flip_a_byte(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.seek(1000)
        b = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([b[0] ^ 0xFF]))


def test_a_tarball_damaged_in_staging_is_never_published_and_is_sent_again(tmp_path, raw_cache):
    from dwfhpc.parts import pack_exposure

    parts = pack_exposure(raw_cache[0], tmp_path / "out", codec="rice", parts=1, jobs=1)
    site = site_for(tmp_path)
    tr = LocalTransport(site.transport, tmp_path / "staging", tmp_path / "inbox")
    batch = [(parts[0].tar, parts[0].manifest)]
    tr.send(batch)
    _flip_a_byte(tmp_path / "staging" / parts[0].tar.name)
    with pytest.raises(TransferError, match="damaged in staging") as err:
        tr.move(batch)
    assert err.value.retryable and not any((tmp_path / "inbox").iterdir())
    assert not (tmp_path / "staging" / parts[0].tar.name).exists()
    tr.deliver_many(batch)  # the retry
    assert (tmp_path / "inbox" / parts[0].tar.name).read_bytes() == parts[0].tar.read_bytes()


def test_delivering_a_part_twice_does_no_harm(tmp_path, raw_cache):
    from dwfhpc.parts import pack_exposure

    parts = pack_exposure(raw_cache[0], tmp_path / "out", codec="rice", parts=1, jobs=1)
    site = site_for(tmp_path)
    tr = LocalTransport(site.transport, tmp_path / "staging", tmp_path / "inbox")
    tr.deliver(parts[0].tar, parts[0].manifest)
    tr.deliver(parts[0].tar, parts[0].manifest)
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == [parts[0].manifest.name, parts[0].tar.name]
    assert (tmp_path / "inbox" / parts[0].tar.name).read_bytes() == parts[0].tar.read_bytes()


def test_local_batch_drops_none_newest_bundle_first(tmp_path, raw_cache):
    site = site_for(tmp_path)
    drop(raw_cache, site.path(site.push.raw_dir), range(5))
    out = run_push(site, mode="batch", nbundle=2)
    assert out.delivered == 5
    assert inbox_files(site) == expected_names(range(FIRST, FIRST + 5))
    order = [r[0] for r in journal_rows(site, "SELECT expnum FROM exposures ORDER BY t_pack_start")]
    assert set(order[:2]) == {FIRST + 4, FIRST + 3} and set(order[2:4]) == {FIRST + 2, FIRST + 1}
    assert order[4] == FIRST


# --------------------------------------------------------------------------- ssh: real sshd, real rsync
@pytest.mark.ssh
def test_ssh_transport_idempotent_and_listing(tmp_path, raw_cache, sshd_server):
    from dwfhpc.parts import pack_exposure

    site = site_for(tmp_path, sshd_server)
    parts = pack_exposure(raw_cache[0], tmp_path / "out", codec="rice", parts=2, jobs=1)
    tr = SshTransport(site.transport, site, 0, control_dir(str(tmp_path)))
    try:
        tr.prepare()
        for p in parts:
            tr.deliver(p.tar, p.manifest)
        tr.deliver(parts[0].tar, parts[0].manifest)  # again: no harm
        held = tr.listing()
    finally:
        tr.close()
    assert held == {f.name: f.stat().st_size for p in parts for f in (p.tar, p.manifest)}
    assert not [p for p in (tmp_path / "cluster" / "staging").iterdir() if not p.name.startswith(".")]


@pytest.mark.ssh
def test_ssh_tarball_damaged_in_staging_is_removed_and_sent_again(tmp_path, raw_cache, sshd_server):
    from dwfhpc.parts import pack_exposure

    site = site_for(tmp_path, sshd_server)
    parts = pack_exposure(raw_cache[0], tmp_path / "out", codec="rice", parts=1, jobs=1)
    batch = [(parts[0].tar, parts[0].manifest)]
    tr = SshTransport(site.transport, site, 0, control_dir(str(tmp_path)))
    staged = tmp_path / "cluster" / "staging" / parts[0].tar.name
    try:
        tr.prepare()
        tr.send(batch)
        _flip_a_byte(staged)
        with pytest.raises(TransferError, match="damaged in staging") as err:
            tr.move(batch)
        assert err.value.retryable and not staged.exists()
        assert not (tmp_path / "cluster" / "inbox" / parts[0].manifest.name).exists()
        tr.deliver_many(batch)
    finally:
        tr.close()
    assert (tmp_path / "cluster" / "inbox" / parts[0].tar.name).read_bytes() == parts[0].tar.read_bytes()


@pytest.mark.ssh
def test_ssh_refuses_unknown_host_key(tmp_path, raw_cache, sshd_server):
    from dwfhpc.parts import pack_exposure

    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{sshd_server.host}]:{sshd_server.port} ssh-ed25519 "
                     "AAAAC3NzaC1lZDI1NTE5AAAAIEyCsbkYVqFV9Fx8nAVYiZLEmBz8ktR8GoEjnGxEG3tN\n")
    site = site_for(tmp_path, sshd_server)
    site.transport.known_hosts = str(wrong)
    parts = pack_exposure(raw_cache[0], tmp_path / "out", codec="rice", parts=1, jobs=1)
    tr = SshTransport(site.transport, site, 0, control_dir(str(tmp_path)))
    with pytest.raises(TransferError) as err:
        tr.deliver(parts[0].tar, parts[0].manifest)
    assert "host key" in str(err.value).lower() or "verification failed" in str(err.value).lower()
    assert not (tmp_path / "cluster" / "inbox").exists()


@pytest.mark.ssh
def test_ssh_push_refused_host_key_fails_cleanly(tmp_path, raw_cache, sshd_server):
    """A refused host key stops push before any stream starts: the error itself, and the journal lock released."""
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{sshd_server.host}]:{sshd_server.port} ssh-ed25519 "
                     "AAAAC3NzaC1lZDI1NTE5AAAAIEyCsbkYVqFV9Fx8nAVYiZLEmBz8ktR8GoEjnGxEG3tN\n")
    site = site_for(tmp_path, sshd_server)
    site.transport.known_hosts = str(wrong)
    site.transport.retries = 1  # ssh exits 255 on a refused host key, which counts as retryable
    drop(raw_cache, site.path(site.push.raw_dir), [1])
    with pytest.raises(TransferError, match="(?i)host key|verification failed"):
        run_push(site)
    site.transport.known_hosts = str(sshd_server.known_hosts)
    assert run_push(site).delivered == 1  # the lock was released


@pytest.mark.ssh
@pytest.mark.parametrize("mode", ["serial", "parallel", "batch"])
def test_ssh_modes(tmp_path, raw_cache, sshd_server, mode):
    site = site_for(tmp_path, sshd_server)
    drop(raw_cache, site.path(site.push.raw_dir), range(3))
    out = run_push(site, mode=mode, nbundle=2)
    assert out.delivered == 3 and out.failed == 0
    assert inbox_files(site) == expected_names(range(FIRST, FIRST + 3))
    rows = journal_rows(site, "SELECT expnum, t_pack_start, t_delivered FROM exposures ORDER BY t_pack_start")
    if mode == "serial":  # newest first, one at a time
        assert [r[0] for r in rows] == [FIRST + 2, FIRST + 1, FIRST]
        assert all(rows[i][1] >= rows[i - 1][2] for i in range(1, 3))
    assert journal_rows(site, "SELECT COUNT(*) FROM parts WHERE state='confirmed' AND attempts=1") == [(6,)]


@pytest.mark.ssh
def test_ssh_end_of_night_sends_what_is_missing(tmp_path, raw_cache, sshd_server):
    site = site_for(tmp_path, sshd_server)
    raw = site.path(site.push.raw_dir)
    drop(raw_cache, raw, range(3))
    assert run_push(site).delivered == 3
    inbox = site.path(site.transport.inbox)
    (inbox / f"DECam_{FIRST:08d}.p1of2.tar").unlink()       # lost, but at/below --exp-min: left alone
    (inbox / f"DECam_{FIRST + 1:08d}.p2of2.tar").unlink()   # lost on the receiver
    drop(raw_cache, raw, [3])                                 # never sent
    proc = subprocess.run([sys.executable, "-m", "dwfhpc.cli", "push", "--config", str(write_config(tmp_path, site)),
                           "--mode", "end-of-night", "--exp-min", str(FIRST)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 of 3 delivered" in proc.stdout
    names = set(inbox_files(site))
    assert set(expected_names(range(FIRST + 1, FIRST + 4))) <= names
    assert f"DECam_{FIRST:08d}.p1of2.tar" not in names


def write_config(tmp_path: Path, site) -> Path:
    import yaml

    path = tmp_path / "site.yaml"
    data = site.model_dump(mode="json")
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.ssh
def test_ssh_truncated_file_reported_rest_delivered(tmp_path, raw_cache, sshd_server):
    site = site_for(tmp_path, sshd_server, incomplete_timeout=1.5)
    raw = site.path(site.push.raw_dir)
    drop(raw_cache, raw, range(2))
    data = raw_cache[2].read_bytes()
    (raw / raw_cache[2].name).write_bytes(data[: len(data) * 2 // 3])
    proc = subprocess.run([sys.executable, "-m", "dwfhpc.cli", "push", "--config", str(write_config(tmp_path, site)),
                           "--once"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "event=file-failed" in proc.stdout and raw_cache[2].name in proc.stdout and "truncated" in proc.stdout
    assert inbox_files(site) == expected_names([FIRST, FIRST + 1])
    assert journal_rows(site, "SELECT state FROM files WHERE path LIKE '%" + raw_cache[2].name + "'") == [("failed",)]
    status = subprocess.run([sys.executable, "-m", "dwfhpc.cli", "push", "--config", str(tmp_path / "site.yaml"),
                             "--status"], capture_output=True, text=True)
    assert "failed" in status.stdout and raw_cache[2].name in status.stdout


@pytest.mark.ssh
def test_ssh_outage_retries_then_completes(tmp_path, raw_cache, sshd_server):
    site = site_for(tmp_path, sshd_server)
    drop(raw_cache, site.path(site.push.raw_dir), range(2))
    sshd_server.stop()
    restart = threading.Timer(4.0, sshd_server.start)
    restart.start()
    try:
        out = run_push(site)
    finally:
        restart.join()
    assert out.delivered == 2 and out.failed == 0
    assert inbox_files(site) == expected_names([FIRST, FIRST + 1])
    retries = journal_rows(site, "SELECT message FROM events WHERE level='warning' AND message LIKE 'retry%'")
    assert retries and "refused" in retries[0][0].lower()


@pytest.mark.ssh
def test_ssh_kill_mid_transfer_then_resume(tmp_path, raw_cache, sshd_server):
    """SIGKILL the whole push process group mid-transfer; the restart completes without re-sending confirmed parts."""
    slow = site_for(tmp_path, sshd_server)
    slow.transport.bwlimit_kbps = 1500
    cfg = write_config(tmp_path, slow)
    drop(raw_cache, slow.path(slow.push.raw_dir), range(3))
    proc = subprocess.Popen([sys.executable, "-m", "dwfhpc.cli", "push", "--config", str(cfg), "--once"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    journal = slow.path(slow.push.journal)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if journal.exists():
                try:
                    rows = journal_rows(slow, "SELECT state, COUNT(*) FROM parts GROUP BY state")
                except sqlite3.OperationalError:
                    rows = []
                counts = dict(rows)
                if counts.get("confirmed", 0) >= 1 and counts.get("sending", 0) >= 1:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("push never got to mid-transfer")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = dict(journal_rows(slow, "SELECT tar_name, t_confirmed FROM parts WHERE state='confirmed'"))
    inbox = slow.path(slow.transport.inbox)
    inodes = {name: (inbox / name).stat().st_ino for name in before}
    fast = site_for(tmp_path, sshd_server)
    out = run_push(fast)
    assert out.failed == 0
    assert inbox_files(fast) == expected_names(range(FIRST, FIRST + 3))
    after = dict(journal_rows(fast, "SELECT tar_name, t_confirmed FROM parts"))
    assert all(after[name] == t for name, t in before.items())  # confirmed before the kill: not sent again
    assert all((inbox / name).stat().st_ino == ino for name, ino in inodes.items())
    assert journal_rows(fast, "SELECT COUNT(*) FROM exposures WHERE state='delivered'") == [(3,)]
    assert not [p for p in Path(fast.transport.staging).iterdir() if not p.name.startswith(".")]
