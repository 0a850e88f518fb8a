"""Hostile inbox (issue 26): whatever one delivery holds, the damage stays in that delivery.

Each bad delivery is quarantined with ``reason.txt`` and a state DB reason naming the problem, the
scan never raises, every scan ends in bounded time, and a good part beside it is accepted in the same
scan. Real files throughout: links, FIFOs, sparse files, crafted tar headers written byte by byte.
"""

from __future__ import annotations

import json
import os
import random
import stat
import tarfile
import time
from pathlib import Path

import yaml

from dwfhpc.cli import main
from dwfhpc.config import load_site
from dwfhpc.db import install_event_handler, remove_event_handler
from dwfhpc.ingest.emit import emit_scripts
from dwfhpc.ingest.inbox import Inbox, ScanResult
from dwfhpc.layout import quarantine_dir
from dwfhpc.statedb import StateDB

from test_inbox_fuzz import World, good_part, make_world, manifest_dict, sign, write_tar

MANIFEST = ".manifest.json"


def inbox_for(w: World, db: StateDB, **kw) -> Inbox:
    kw.setdefault("arrival_grace", 0)
    kw.setdefault("verify_threads", 2)
    return Inbox(w.inbox, w.store, w.quarantine, db, mem_gb=1, time_minutes=5, **kw)


def good(w: World, expnum: int) -> str:
    """A good part in the inbox (manifest last); returns its stem."""
    tar, mpath, m = good_part(w.inbox, expnum, random.Random(expnum))
    mpath.write_text(json.dumps(m))
    return mpath.name[: -len(MANIFEST)]


def signed_part(w: World, expnum: int, entries_for) -> tuple[Path, Path, dict]:
    """A part whose tarball is ``entries_for(members)`` and whose manifest carries its true size and sha256."""
    tar, mpath, m = good_part(w.inbox, expnum, random.Random(expnum))
    with tarfile.open(tar) as t:
        members = [(info, t.extractfile(info).read()) for info in t]
    write_tar(tar, entries_for(members))
    sign(tar, m)
    mpath.write_text(json.dumps(m))
    return tar, mpath, m


def quarantined(w: World, db: StateDB, out: ScanResult, stem: str, *words: str) -> str:
    """``stem`` was quarantined by ``out`` with one of ``words`` in its reason, in reason.txt and in the DB."""
    reasons = dict(out.quarantined)
    assert stem in reasons, f"{stem} not quarantined: {out}"
    reason = reasons[stem]
    assert any(word in reason for word in words), f"{reason!r} names none of {words}"
    folders = [f for f in w.quarantine.iterdir() if f.name.startswith(stem + ".")]
    assert any((f / "reason.txt").read_text().strip() == reason for f in folders)
    row = db.part(stem)
    assert row is not None and row.state == "quarantined" and row.reason == reason
    return reason


def scan(box: Inbox, now: float | None = None) -> tuple[ScanResult, float]:
    t0 = time.perf_counter()
    out = box.scan(now)
    return out, time.perf_counter() - t0


# ------------------------------------------------------------------------------ 1: links
def _link_kinds(w: World, path: Path, kind: str) -> None:
    """Make ``path`` a symlink of one hostile kind (never a file of its own)."""
    if kind == "self":
        path.symlink_to(path.name)
    elif kind == "dangling":
        path.symlink_to(w.outside / "nowhere")
    elif kind == "loop":
        other = w.inbox / f".loop-{path.name}"
        path.symlink_to(other.name)
        other.symlink_to(path.name)
    elif kind == "dir":
        path.symlink_to(w.outside)
    elif kind == "fifo":
        fifo = w.outside / f"fifo-{path.name}"
        os.mkfifo(fifo)
        path.symlink_to(fifo)
    else:  # a link to a real file outside
        target = w.outside / f"file-{path.name}"
        target.write_text("{}")
        path.symlink_to(target)


LINKS = ("self", "dangling", "loop", "dir", "fifo", "file")


def test_links_fifos_devices_and_folders_under_part_names_are_quarantined_as_they_are(tmp_path):
    """Finding 1: ``X.p1of1.manifest.json -> itself`` killed the daemon (ELOOP); a dangling one stayed forever.

    Every kind of link (to itself, dangling, a loop of two, to a folder, a FIFO, a file outside) under a
    manifest's name and under a tarball's name, and manifest-named FIFO, folder and device, all in one
    inbox beside a good part: one scan, no exception, each quarantined with its reason, the link itself moved.
    """
    w = make_world(tmp_path)
    ok = good(w, 500)
    bad: list[str] = []
    for i, kind in enumerate(LINKS):
        stem = f"DECam_{501 + i:08d}.p1of1"  # a link named as a manifest
        _link_kinds(w, w.inbox / f"{stem}{MANIFEST}", kind)
        bad.append(stem)
        tar, mpath, m = good_part(w.inbox, 511 + i, random.Random(511 + i))  # a link named as a tarball
        tar.unlink()
        _link_kinds(w, tar, kind)
        mpath.write_text(json.dumps(m))
        bad.append(mpath.name[: -len(MANIFEST)])
    os.mkfifo(w.inbox / f"DECam_00000522.p1of1{MANIFEST}")
    (w.inbox / f"DECam_00000523.p1of1{MANIFEST}").mkdir()
    bad += ["DECam_00000522.p1of1", "DECam_00000523.p1of1"]
    try:
        os.mknod(w.inbox / f"DECam_00000524.p1of1{MANIFEST}", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        bad.append("DECam_00000524.p1of1")
    except PermissionError:
        pass  # not root: no device node
    tar, mpath, m = good_part(w.inbox, 525, random.Random(525))
    tar.unlink()
    os.mkfifo(tar)  # a tarball that is a FIFO: never opened
    mpath.write_text(json.dumps(m))
    bad.append(mpath.name[: -len(MANIFEST)])
    with StateDB(w.db_path) as db:
        box = inbox_for(w, db)
        try:
            out, dt = scan(box)
        finally:
            box.close()
        assert out.accepted == [ok] and dt < 5
        for stem in bad:
            quarantined(w, db, out, stem, "not a regular file")
        for i in range(3):  # self, dangling, loop: the link itself is in quarantine, as a link
            stem = bad[2 * i]
            moved = next(w.quarantine.glob(f"{stem}.*")) / f"{stem}{MANIFEST}"
            assert stat.S_ISLNK(os.lstat(moved).st_mode)
    # the loop's other end: named as a manifest, it is quarantined too (not a part name); a dot-tarball is
    # a transfer's temporary name and stays
    assert [p.name for p in w.inbox.iterdir()] == [".loop-DECam_00000513.p1of1.tar"]


# ------------------------------------------------------------------------------ 4, 5: crafted tar headers
def _long_pax(members):
    info, data = members[0]
    info.pax_headers = {"comment": "1" * 100_000}  # the CVE-2024-6232 pattern: quadratic in tarfile's pax parser
    return [(info, data)] + members[1:]


def _sparse_pax(members):
    info, data = members[0]
    info.pax_headers = {"GNU.sparse.map": "0,x", "GNU.sparse.size": "10"}  # int('x'): ValueError in tarfile
    return [(info, data)] + members[1:]


def test_a_long_pax_header_with_a_correct_sha256_is_refused_in_bounded_time(tmp_path):
    """Finding 4: a signed tarball with a 100k-digit pax record froze the inbox (quadratic parsing)."""
    w = make_world(tmp_path)
    tar, mpath, m = signed_part(w, 531, _long_pax)
    stem = mpath.name[: -len(MANIFEST)]
    ok = good(w, 532)
    with StateDB(w.db_path) as db:
        box = inbox_for(w, db)
        try:
            out, dt = scan(box)
        finally:
            box.close()
        assert out.accepted == [ok]
        quarantined(w, db, out, stem, "extended tar header")
    assert dt < 2, f"scan took {dt:.1f} s"


def test_a_tarball_that_does_not_match_its_manifest_is_never_parsed(tmp_path):
    """Finding 4: size and sha256 first; a crafted tarball with a made-up checksum is refused by the checksum."""
    w = make_world(tmp_path)
    tar, mpath, m = signed_part(w, 533, _long_pax)
    m["tar_sha256"] = "ab" * 32
    mpath.write_text(json.dumps(m))
    stem = mpath.name[: -len(MANIFEST)]
    with StateDB(w.db_path) as db:
        box = inbox_for(w, db)
        try:
            out, dt = scan(box)
        finally:
            box.close()
        quarantined(w, db, out, stem, "sha256")
    assert dt < 2


def test_a_malformed_gnu_sparse_record_is_quarantined_at_once(tmp_path):
    """Finding 5: tarfile's ValueError was taken for 'try again' on every poll, forever."""
    w = make_world(tmp_path)
    tar, mpath, m = signed_part(w, 541, _sparse_pax)
    stem = mpath.name[: -len(MANIFEST)]
    ok = good(w, 542)
    with StateDB(w.db_path) as db:
        box = inbox_for(w, db)
        try:
            out, _ = scan(box)
        finally:
            box.close()
        assert out.accepted == [ok]
        quarantined(w, db, out, stem, "GNU sparse")
        assert not [e for e in db.events(level="error") if "not handled" in e["message"]]
    assert not any(w.inbox.iterdir())


def test_an_old_gnu_sparse_member_is_refused(tmp_path):
    def sparse_member(members):
        info, data = members[0]
        info.type = tarfile.GNUTYPE_SPARSE
        return [(info, data)] + members[1:]

    w = make_world(tmp_path)
    tar, mpath, m = signed_part(w, 543, sparse_member)
    stem = mpath.name[: -len(MANIFEST)]
    with StateDB(w.db_path) as db:
        box = inbox_for(w, db)
        try:
            out, _ = scan(box)
        finally:
            box.close()
        quarantined(w, db, out, stem, "GNU sparse")


def test_emit_scripts_skips_a_crafted_part_and_a_looping_link(tmp_path, capsys):
    """Finding 5: ``dwfhpc ingest --emit-scripts`` crashed with a traceback on the sparse record."""
    site = load_site("local", workdir=tmp_path)
    inbox = site.path(site.ingest.inbox)
    w = World(tmp_path, inbox, tmp_path / "s", tmp_path / "q", tmp_path / "db" / "x.db", tmp_path / "outside")
    for d in (inbox, w.outside):
        d.mkdir(parents=True, exist_ok=True)
    signed_part(w, 545, _sparse_pax)
    loop = inbox / f"DECam_00000546.p1of1{MANIFEST}"
    loop.symlink_to(loop.name)
    assert emit_scripts(site, tmp_path / "scripts") == []
    said = capsys.readouterr().out
    assert said.count("skipped:") == 2 and "GNU sparse" in said and "not a regular file" in said


# ------------------------------------------------------------------------------ 9: sparse / oversized tarballs
def _sparse_tar(path: Path, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


def test_an_oversized_sparse_tarball_is_quarantined_without_hashing(tmp_path):
    """Finding 9: a tarball padded to 16 GiB (sparse) was hashed in full before its quarantine."""
    w = make_world(tmp_path)
    tar, mpath, m = good_part(w.inbox, 551, random.Random(551))
    sign(tar, m)
    mpath.write_text(json.dumps(m))
    _sparse_tar(tar, 16 << 30)  # larger than the manifest says
    big = mpath.name[: -len(MANIFEST)]
    tar2, mpath2, m2 = good_part(w.inbox, 552, random.Random(552))
    _sparse_tar(tar2, 16 << 30)
    m2["tar_bytes"], m2["tar_sha256"] = 16 << 30, "cd" * 32  # the manifest agrees, with a made-up checksum
    mpath2.write_text(json.dumps(m2))
    claimed = mpath2.name[: -len(MANIFEST)]
    ok = good(w, 553)
    with StateDB(w.db_path) as db:
        box = inbox_for(w, db)
        try:
            out, dt = scan(box)
        finally:
            box.close()
        assert out.accepted == [ok]
        quarantined(w, db, out, big, "tarball has 17179869184 bytes")
        quarantined(w, db, out, claimed, "field tar_bytes")
    assert dt < 2, f"scan took {dt:.1f} s: the sparse tarball was read"


def test_a_slow_part_does_not_hold_the_scan_or_the_good_part_beside_it(tmp_path):
    """A tarball that must be hashed (size plausible for its members) is hashed in the pool; the scan does not wait."""
    w = make_world(tmp_path)
    payloads = {25: b"a", 32: b"b"}
    m = manifest_dict(554, [25, 32], 1, 1, payloads)
    for mm in m["members"]:
        mm["bytes"] = 1 << 29  # two 512 MiB members claimed
    tar = w.inbox / m["tar_name"]
    tar.write_bytes(b"")
    _sparse_tar(tar, (1 << 30) + 4096)
    m["tar_bytes"], m["tar_sha256"] = (1 << 30) + 4096, "ef" * 32
    (w.inbox / f"DECam_00000554.p1of1{MANIFEST}").write_text(json.dumps(m))
    time.sleep(0.05)  # the good part arrives after the slow one
    ok = good(w, 555)
    with StateDB(w.db_path) as db:
        box = inbox_for(w, db, hash_wait=0.5)
        try:
            out, dt = scan(box)
            assert out.accepted == [ok] and "DECam_00000554.p1of1" in out.waiting
            assert dt < 2, f"scan took {dt:.1f} s"
            deadline = time.monotonic() + 120
            while not out.quarantined and time.monotonic() < deadline:
                out, dt = scan(box)
                assert dt < 2
        finally:
            box.close()
        quarantined(w, db, out, "DECam_00000554.p1of1", "sha256")


# ------------------------------------------------------------------------------ 12: quarantine collisions
def test_two_bad_copies_in_one_second_keep_their_own_folders(tmp_path):
    w = make_world(tmp_path)
    stem = "DECam_00000561.p1of1"
    q = w.quarantine
    q.mkdir(parents=True, exist_ok=True)
    earlier = []
    for t in (time.time(), time.time() + 1):  # an earlier bad copy already in this second's folder (and the next's)
        folder = quarantine_dir(q, stem, time.strftime("%Y%m%dT%H%M%S", time.localtime(t)))
        folder.mkdir(exist_ok=True)
        (folder / "reason.txt").write_text("the first copy\n")
        (folder / f"{stem}.tar").write_bytes(b"first")
        earlier.append(folder)
    tar, mpath, m = good_part(w.inbox, 561, random.Random(561))
    m["tar_sha256"] = "12" * 32
    mpath.write_text(json.dumps(m))
    with StateDB(w.db_path) as db:
        box = inbox_for(w, db)
        try:
            out, _ = scan(box)
        finally:
            box.close()
        reason = quarantined(w, db, out, stem, "sha256")
    for folder in earlier:
        assert (folder / "reason.txt").read_text() == "the first copy\n"
        assert (folder / f"{stem}.tar").read_bytes() == b"first"
    new = [f for f in q.iterdir() if f not in earlier]
    assert len(new) == 1 and (new[0] / "reason.txt").read_text().strip() == reason


def test_a_second_bad_copy_right_after_the_first_gets_its_own_folder(tmp_path):
    w = make_world(tmp_path)
    stem = "DECam_00000562.p1of1"
    with StateDB(w.db_path) as db:
        box = inbox_for(w, db)
        try:
            for fake in ("34", "56"):
                tar, mpath, m = good_part(w.inbox, 562, random.Random(562))
                m["tar_sha256"] = fake * 32
                mpath.write_text(json.dumps(m))
                out, _ = scan(box)
                quarantined(w, db, out, stem, "sha256")
        finally:
            box.close()
    folders = sorted(w.quarantine.glob(f"{stem}.*"))
    assert len(folders) == 2 and len({(f / "reason.txt").read_text() for f in folders}) == 2
    assert all((f / f"{stem}.tar").is_file() and (f / f"{stem}{MANIFEST}").is_file() for f in folders)


# ------------------------------------------------------------------------------ orphan tarballs
def test_a_tarball_whose_manifest_never_comes_is_quarantined_after_the_grace(tmp_path):
    w = make_world(tmp_path)
    tar, mpath, m = good_part(w.inbox, 571, random.Random(571))  # no manifest written
    junk = w.inbox / "junk.tar"
    junk.write_bytes(b"x" * 100)
    with StateDB(w.db_path) as db:
        box = inbox_for(w, db, arrival_grace=30)
        events = install_event_handler(db, "dwfhpc.ingest")  # as the daemon does: its log lines are events
        try:
            t0 = time.time()
            out, _ = scan(box, t0)
            assert not out.quarantined and tar.exists()
            out, _ = scan(box, t0 + 31)
        finally:
            remove_event_handler(events)
            box.close()
        reason = quarantined(w, db, out, "DECam_00000571.p1of1", "tarball without a manifest")
        assert "30 s" in reason
        assert any("tarball without a manifest" in e["message"] for e in db.events(limit=100))
        assert "junk" in dict(out.quarantined)
    assert not any(w.inbox.iterdir())


# ------------------------------------------------------------------------------ 6 + the daemon: drain and status
def test_ingest_drain_ends_and_status_reports_a_hostile_inbox(tmp_path, capsys):
    """Findings 1, 5, 6: ``ingest --drain`` returns, ``dwfhpc status`` runs after quarantines with no sibling."""
    site = load_site("local", workdir=tmp_path, overrides={"ingest": {"workers": 0, "arrival_grace_seconds": 1, "poll_seconds": 0.3,
                                                                      "report_every_seconds": 3600}})
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(site.model_dump(mode="json", exclude={"source"})))
    inbox = site.path(site.ingest.inbox)
    w = World(tmp_path, inbox, tmp_path / "s", tmp_path / "q", tmp_path / "db" / "x.db", tmp_path / "outside")
    for d in (inbox, w.outside):
        d.mkdir(parents=True, exist_ok=True)
    loop = inbox / f"DECam_00000581.p1of1{MANIFEST}"
    loop.symlink_to(loop.name)
    (inbox / f"DECam_00000582.p1of1{MANIFEST}").symlink_to(w.outside / "nowhere")
    signed_part(w, 583, _sparse_pax)
    tar, mpath, m = good_part(inbox, 584, random.Random(584))
    m["tar_sha256"] = "78" * 32  # an ordinary bad checksum
    mpath.write_text(json.dumps(m))
    orphan, orphan_manifest, _ = good_part(inbox, 585, random.Random(585))
    assert not orphan_manifest.exists()  # its manifest never comes: --drain waits out the grace, then it is quarantined
    t0 = time.monotonic()
    assert main(["ingest", "--config", str(config), "--drain", "--no-report"]) == 0
    assert time.monotonic() - t0 < 60
    capsys.readouterr()
    assert main(["status", "--config", str(config)]) == 0
    said = capsys.readouterr().out
    for n in (581, 582, 583, 584):
        assert f"quarantined DECam_00000{n}.p1of1:" in said
    assert main(["status", "--config", str(config), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["parts"] == {"quarantined": 5} and s["ccds"]["science"]["total"] == 0  # the orphan is recorded too
    assert not any(inbox.iterdir())
    assert any((f / orphan.name).is_file() for f in site.path(site.ingest.quarantine).glob("DECam_00000585.p1of1.*"))


def test_status_after_an_ordinary_quarantine(tmp_path, capsys):
    """Finding 6: a quarantined part with no accepted sibling made ``promised_ccds`` read ``None``."""
    site = load_site("local", workdir=tmp_path)
    inbox = site.path(site.ingest.inbox)
    inbox.mkdir(parents=True)
    tar, mpath, m = good_part(inbox, 591, random.Random(591))
    m["tar_sha256"] = "9a" * 32
    mpath.write_text(json.dumps(m))
    with StateDB(site.path(site.ingest.state_db)) as db:
        box = Inbox(inbox, site.path(site.ingest.parts_store), site.path(site.ingest.quarantine), db, mem_gb=1,
                    time_minutes=5, arrival_grace=0)
        try:
            box.scan()
        finally:
            box.close()
    assert main(["status", "--workdir", str(tmp_path)]) == 0
    said = capsys.readouterr().out
    assert "0 science CCDs" in said and "quarantined DECam_00000591.p1of1: tarball sha256" in said
