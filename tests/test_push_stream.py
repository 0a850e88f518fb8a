"""``transport.stream``: one long-lived ``dwfhpc receive`` per push stream, fed part after part.

The receiver's protocol is tested on real files through real pipes (``dwfhpc receive`` as a
subprocess); the transport through a real sshd on loopback with host keys checked.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import dwfhpc
from dwfhpc.errors import TransferError
from dwfhpc.link import make_transports
from dwfhpc.link.ssh import control_dir
from dwfhpc.link.stream import StreamTransport

from test_push import drop, inbox_files, journal_rows, raw_cache, run_push, site_for  # noqa: F401 (fixture)

#: the dwfhpc under test, whatever the remote shell's PATH or the installed copy says
DWFHPC = ["env", f"PYTHONPATH={Path(dwfhpc.__file__).resolve().parent.parent}", sys.executable, "-m", "dwfhpc"]
RECEIVE = [*DWFHPC, "receive"]


def make_part(folder: Path, expnum: int, k: int = 1, n: int = 1, size: int = 300_000) -> tuple[Path, Path]:
    """A part's two files as the receiver sees them (it reads only the manifest's tar_sha256)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"DECam_{expnum:08d}.p{k}of{n}"
    tar = folder / f"{stem}.tar"
    tar.write_bytes(hashlib.sha256(stem.encode()).digest() * (size // 32))
    manifest = folder / f"{stem}.manifest.json"
    manifest.write_text(json.dumps({"expid": stem.split(".")[0], "tar_sha256": sha(tar.read_bytes())}))
    return tar, manifest


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def frame(path: Path, *, name: str | None = None, digest: str | None = None, data: bytes | None = None) -> bytes:
    data = path.read_bytes() if data is None else data
    header = {"name": name or path.name, "bytes": len(data), "sha256": digest or sha(data)}
    return json.dumps(header).encode() + b"\n" + data


def receive(tmp_path: Path, stdin: bytes) -> tuple[int, list[dict]]:
    proc = subprocess.run([*RECEIVE, "--staging", str(tmp_path / "staging"), "--inbox", str(tmp_path / "inbox")],
                          input=stdin, capture_output=True, timeout=60)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# --------------------------------------------------------------------------- the receiver on real pipes
def test_receiver_publishes_each_part_tarball_first_and_answers_every_frame(tmp_path):
    a, b = make_part(tmp_path / "out", 1100001), make_part(tmp_path / "out", 1100002)
    rc, answers = receive(tmp_path, b"".join(frame(f) for f in (*a, *b)))
    assert rc == 0
    assert answers[0] == {"hello": "dwfhpc-receive/1"}
    assert answers[1:] == [{"name": f.name, "ok": True} for f in (*a, *b)]
    assert visible(tmp_path / "inbox") == sorted(f.name for f in (*a, *b))
    assert (tmp_path / "inbox" / a[0].name).read_bytes() == a[0].read_bytes()
    assert visible(tmp_path / "staging") == []


def test_a_damaged_frame_is_refused_unpublished_and_the_stream_goes_on(tmp_path):
    bad, good = make_part(tmp_path / "out", 1100001), make_part(tmp_path / "out", 1100002)
    flipped = bytearray(bad[0].read_bytes())
    flipped[1000] ^= 0x01
    stdin = frame(bad[0], data=bytes(flipped), digest=sha(bad[0].read_bytes())) + frame(bad[1]) + \
        b"".join(frame(f) for f in good)
    rc, answers = receive(tmp_path, stdin)
    assert rc == 0
    assert answers[1]["name"] == bad[0].name and "differs from the sender's" in answers[1]["error"]
    assert answers[1]["retryable"] is True
    assert answers[2]["name"] == bad[1].name and "is not in staging" in answers[2]["error"]  # manifest never alone
    assert answers[3:] == [{"name": f.name, "ok": True} for f in good]
    assert visible(tmp_path / "inbox") == sorted(f.name for f in good)


def test_a_tarball_not_matching_its_manifest_is_never_published(tmp_path):
    tar, manifest = make_part(tmp_path / "out", 1100001)
    manifest.write_text(json.dumps({"tar_sha256": "0" * 64}))  # frames intact, part inconsistent
    rc, answers = receive(tmp_path, frame(tar) + frame(manifest))
    assert rc == 0 and answers[1] == {"name": tar.name, "ok": True}
    assert "does not match the manifest's" in answers[2]["error"]
    assert visible(tmp_path / "inbox") == [] and not (tmp_path / "staging" / tar.name).exists()


@pytest.mark.parametrize("name", ["../DECam_01100001.p1of1.tar", "/tmp/DECam_01100001.p1of1.tar",
                                  "x; rm -rf ~.p1of1.tar", ".ssh.p1of1.manifest.json"])
def test_a_name_that_is_not_a_part_stops_the_receiver_before_any_file(tmp_path, name):
    tar, _ = make_part(tmp_path / "out", 1100001)
    rc, answers = receive(tmp_path, frame(tar, name=name))
    assert rc == 2 and answers[-1]["name"] is None and answers[-1]["error"].startswith("protocol:")
    assert visible(tmp_path / "staging") == [] and visible(tmp_path / "inbox") == []
    assert not (tmp_path / "DECam_01100001.p1of1.tar").exists()


def test_input_ending_inside_a_frame_leaves_nothing_behind(tmp_path):
    tar, _ = make_part(tmp_path / "out", 1100001)
    rc, answers = receive(tmp_path, frame(tar)[:-1000])
    assert rc == 3 and answers == [{"hello": "dwfhpc-receive/1"}]
    assert visible(tmp_path / "staging") == [] and visible(tmp_path / "inbox") == []


def test_an_unwritable_frame_is_a_named_retryable_error_and_the_stream_stays_in_step(tmp_path):
    a, b = make_part(tmp_path / "out", 1100001), make_part(tmp_path / "out", 1100002)
    staging = tmp_path / "staging"
    (staging / a[0].name).mkdir(parents=True)  # a folder where the tarball must go
    rc, answers = receive(tmp_path, b"".join(frame(f) for f in (*a, *b)))
    assert rc == 0
    assert answers[1]["error"] == f"cannot write {staging / a[0].name}: Is a directory"
    assert answers[1]["retryable"] is True
    assert answers[3:] == [{"name": f.name, "ok": True} for f in b]  # the next part's frames read whole
    assert not [n for n in visible(staging) if n.endswith(".receiving")]  # no temporary left behind
    assert visible(tmp_path / "inbox") == sorted(f.name for f in b)


# --------------------------------------------------------------------------- over a real sshd
def stream_site(work: Path, sshd, **transport):
    site = site_for(work, sshd)
    site.transport.stream = True
    site.transport.receiver_command = " ".join(DWFHPC)
    for key, value in transport.items():
        setattr(site.transport, key, value)
    return site


def test_push_with_streams_delivers_every_part_through_one_receiver_per_stream(sshd_server, raw_cache, tmp_path):
    site = stream_site(tmp_path, sshd_server)
    drop(raw_cache, site.path(site.push.raw_dir), range(1, 4))
    outcome = run_push(site)
    assert outcome.delivered == 3 and outcome.failed == 0
    names = inbox_files(site)
    assert len(names) == 12 and all(n.endswith((".tar", ".manifest.json")) for n in names)
    assert journal_rows(site, "SELECT state, COUNT(*) FROM parts GROUP BY state") == [("confirmed", 6)]
    staging = site.path(site.transport.staging)
    assert [p.name for p in staging.iterdir()] == []


def test_a_receiver_without_dwfhpc_is_a_clear_error_not_retried(sshd_server, tmp_path):
    site = stream_site(tmp_path, sshd_server, receiver_command="/nonexistent/dwfhpc")
    [tr] = make_transports(site, 1, str(tmp_path / "journal"))
    try:
        with pytest.raises(TransferError) as err:
            tr.send([make_part(tmp_path / "out", 1100001)])
        assert not err.value.retryable
        assert "cannot run '/nonexistent/dwfhpc'" in str(err.value) and "transport.receiver_command" in str(err.value)
    finally:
        tr.close()


def test_a_killed_stream_fails_retryably_and_the_next_send_delivers_on_a_new_process(sshd_server, tmp_path):
    site = stream_site(tmp_path, sshd_server, bwlimit_kbps=None)
    tr = StreamTransport(site.transport, site, 0, control_dir(str(tmp_path / "j")))
    big = make_part(tmp_path / "out", 1100001, size=400_000_000)
    small = make_part(tmp_path / "out", 1100002)
    inbox = site.path(site.transport.inbox)
    try:
        tr.send([small])  # the process is up
        first = tr._proc
        killer = threading.Timer(0.5, lambda: first.kill())
        killer.start()
        with pytest.raises(TransferError) as err:
            tr.send([big])
        killer.cancel()
        assert err.value.retryable and "broke" in str(err.value)
        assert big[0].name not in visible(inbox) and big[1].name not in visible(inbox)
        tr.send([big])
        assert tr._proc is not first
        assert (inbox / big[0].name).stat().st_size == big[0].stat().st_size
        assert big[1].name in visible(inbox)
    finally:
        tr.close()


def test_a_stalled_stream_is_ended_after_the_timeout(sshd_server, tmp_path):
    site = stream_site(tmp_path, sshd_server, timeout_seconds=2)
    tr = StreamTransport(site.transport, site, 0, control_dir(str(tmp_path / "j")))
    try:
        tr.send([make_part(tmp_path / "out", 1100001)])
        subprocess.run(["pkill", "-STOP", "-f", f"receive --staging {site.transport.staging}"], check=True)
        t0 = time.monotonic()
        with pytest.raises(TransferError) as err:
            tr.send([make_part(tmp_path / "out", 1100002, size=20_000_000)])
        assert err.value.retryable and "no progress for 2 s" in str(err.value)
        assert time.monotonic() - t0 < 30
    finally:
        subprocess.run(["pkill", "-KILL", "-f", f"receive --staging {site.transport.staging}"])
        tr.close()
