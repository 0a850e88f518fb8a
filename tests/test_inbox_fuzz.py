"""Fuzzing the inbox (issue 19): every bad part quarantined with its reason, nothing written outside
the configured folders, nothing queued for a bad part, good parts beside bad ones accepted.

``benchmarks/fuzz_inbox.py`` runs the same generator for many more cases.

A *synthetic* part is what the packer writes, with tiny random member payloads (the inbox never
decompresses a member): real manifest fields, real FITS header cards, a real tarball. Each bad case
is such a part with one thing wrong, in the manifest, the tarball or the files themselves; a seeded
generator makes them, so a failing case is reproduced from its seed.
"""

from __future__ import annotations

import copy
import shutil
import io
import json
import os
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits

from dwfhpc.atomic import sha256_file
from dwfhpc.layout import ccd_stem, manifest_name, part_stem, part_tar_name

NIGHT = "2026-11-24"
DATE_OBS = "2026-11-25T03:00:00.000000"
TOKEN = "fuzzESCAPE"  # every traversal case names this; it must never appear outside the configured folders


def ccd_header(expnum: int, ccd: int, date_obs: str = DATE_OBS) -> str:
    h = fits.Header()
    h["INSTRUME"] = "DECam"
    h["EXPNUM"] = expnum
    h["CCDNUM"] = ccd
    h["DATE-OBS"] = date_obs
    h["OBSTYPE"] = "object"
    h["FILTER"] = "g DECam SDSS c0001 4720.0 1520.0"
    h["OBJECT"] = "DWF_fuzz"
    return h.tostring()


def manifest_dict(expnum: int, ccds: list[int], k: int, n: int, payloads: dict[int, bytes]) -> dict:
    expid = f"DECam_{expnum:08d}"
    members = [{"ccd": c, "name": f"{ccd_stem(expid, c)}.fits.fz", "codec": "rice", "bytes": len(payloads[c]),
                "sha256": __import__("hashlib").sha256(payloads[c]).hexdigest(), "dtype": "uint16",
                "shape": [4146, 2160], "header": ccd_header(expnum, c)} for c in ccds]
    return {"instrument": "decam", "expid": expid, "expnum": expnum, "night": NIGHT, "obstype": "object",
            "kind": "science", "filter": "g", "field": "DWF_fuzz", "date_obs": DATE_OBS, "exptime": 20.0,
            "part": k, "parts": n, "codec": "rice", "codec_params": {}, "tar_name": part_tar_name(expid, k, n),
            "tar_bytes": 0, "tar_sha256": "0" * 64, "members": members, "ccds_in_exposure": sorted(ccds),
            "created": "2026-11-25T03:01:00+00:00", "schema": "dwfhpc.part/1"}


def write_tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for info, data in entries:
            t.addfile(info, io.BytesIO(data) if data is not None else None)


def reg(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    return info, data


def sign(tar: Path, m: dict) -> None:
    m["tar_bytes"], m["tar_sha256"] = tar.stat().st_size, sha256_file(tar)


@dataclass
class Case:
    """One part put in the inbox: good (must be accepted) or bad (must be quarantined with ``expect`` in the reason)."""

    stem: str
    good: bool
    what: str
    expect: tuple[str, ...] = ()  # any of these in the reason
    files: list[Path] = field(default_factory=list)


def good_part(inbox: Path, expnum: int, rng: random.Random, k: int = 1, n: int = 1) -> tuple[Path, Path, dict]:
    ccds = sorted(rng.sample(range(1, 61), 2))
    payloads = {c: rng.randbytes(rng.randint(200, 3000)) for c in ccds}
    m = manifest_dict(expnum, ccds, k, n, payloads)
    tar = inbox / m["tar_name"]
    write_tar(tar, [reg(mm["name"], payloads[mm["ccd"]]) for mm in m["members"]])
    sign(tar, m)
    return tar, inbox / manifest_name(m["expid"], k, n), m


def _trav(rng: random.Random, empty_ok: bool = True) -> str:
    return rng.choice(["../" * rng.randint(1, 12) + f"{TOKEN}-x", f"/tmp/{TOKEN}-abs", f"..\\..\\{TOKEN}",
                       f"a/../../{TOKEN}", "..", ".", f"{TOKEN}\x00", f"2026-11-24/../../{TOKEN}"]
                      + ([""] if empty_ok else []))


EMPTY_OK = ("obstype", "field", "filter", "date_obs", "created")  # an empty value is valid there


STRING_FIELDS = ("instrument", "expid", "night", "obstype", "kind", "filter", "field", "date_obs", "codec",
                 "tar_name", "tar_sha256", "created", "schema")
INT_FIELDS = ("expnum", "part", "parts", "tar_bytes")
WEIRD_STRINGS = ["\u202e2026-11-24", "２０２６-１１-２４", "2026-11-24\n", "g\tr", "DECam_0000０001", "é" * 40,
                 "\x1b[31mred", "x" * 5000, "\ud800", "g;rm -rf ~", "$(touch /tmp/" + TOKEN + ")", "`id`", "🔭"]
WRONG_TYPES = [None, True, 1.5, "12", [], {}, [1, 2], {"a": 1}, -1, 10**30, float("inf")]


def _mutate_manifest(m: dict, rng: random.Random) -> tuple[str, tuple[str, ...]]:
    """Change one thing in the manifest dict; returns (what, words one of which the reason must contain)."""
    kind = rng.choice(["traversal", "weird", "type", "missing", "extra", "huge", "negative", "dup", "member",
                       "member-trav", "header", "nested", "rename"])
    if kind in ("traversal", "weird"):
        key = rng.choice(STRING_FIELDS)
        m[key] = _trav(rng, key not in EMPTY_OK) if kind == "traversal" else rng.choice(WEIRD_STRINGS)
        return f"{kind} in {key}", (f"field {key}", "field manifest", "field expid", "field schema")
    if kind == "type":
        key = rng.choice(STRING_FIELDS + INT_FIELDS + ("exptime", "members", "codec_params", "ccds_in_exposure"))
        valid = {"exptime": [1.5, -0.0], "ccds_in_exposure": [[]], "codec_params": [{}]}.get(key, [])
        m[key] = rng.choice([v for v in WRONG_TYPES if v != m[key] and v not in valid])
        return f"type of {key}", (f"field {key}", "field schema", "field expid", "field part", "tarball has",
                                  "tarball stays")
    if kind == "missing":
        key = rng.choice(sorted(k for k in m if k not in ("ccds_in_exposure", "created")))
        del m[key]
        return f"missing {key}", (f"field {key}", "field schema")
    if kind == "extra":
        key = rng.choice(["extra", "../" + TOKEN, "members2", "\u0000", "night "])
        m[key] = rng.choice(["x", 1, None])
        return f"extra key {key!r}", ("unknown field",)
    if kind == "huge":
        key = rng.choice(INT_FIELDS + ("exptime",))
        m[key] = rng.choice([10**30, 2**63, 1e308, 10**18])
        return f"huge {key}", (f"field {key}", "field expid", "field part", "tarball has", "tarball stays")
    if kind == "negative":
        target = rng.choice(["tar_bytes", "member-bytes", "expnum", "exptime"])
        if target == "member-bytes":
            m["members"][0]["bytes"] = -rng.randint(1, 10**6)
            return "negative member size", ("field members[0].bytes",)
        m[target] = -rng.randint(1, 10**6)
        return f"negative {target}", (f"field {target}",)
    if kind == "dup":
        m["members"].append(copy.deepcopy(m["members"][0]))
        return "duplicate member", ("field members[", "twice")
    if kind == "member":
        key = rng.choice(["ccd", "name", "codec", "sha256", "dtype", "shape", "header", "bytes"])
        mm = m["members"][rng.randrange(len(m["members"]))]
        mm[key] = rng.choice([_trav(rng), 99, -3, 0, 62 + rng.randint(1, 100), [0, 0], "float64", None, "x" * 81])
        return f"member {key}", ("field members[", "bytes, the manifest says", "sha256", "not listed", "missing")
    if kind == "member-trav":
        mm = m["members"][0]
        mm["name"] = rng.choice([f"../{TOKEN}.fits.fz", f"/{TOKEN}", f"{m['expid']}_{mm['ccd']:02d}.fits.fz/../x"])
        return "traversal in a member name", ("field members[0].name",)
    if kind == "header":
        mm = m["members"][0]
        which = rng.choice(["EXPNUM", "CCDNUM", "DATE-OBS", "INSTRUME"])
        h = fits.Header.fromstring(mm["header"])
        h[which] = {"EXPNUM": m["expnum"] + 1, "CCDNUM": mm["ccd"] % 60 + 1, "DATE-OBS": "2026-10-01T03:00:00.000000",
                    "INSTRUME": "HSC"}[which]
        mm["header"] = h.tostring()
        return f"member header {which}", ("does not match the manifest",)
    if kind == "nested":
        m["codec_params"] = {"ratio": rng.choice([{"a": [1] * 3}, [[[]]], "10", float("nan")])}
        return "nested codec_params", ("field codec_params",)
    # rename: identity says one part, the names another
    m["part"], m["parts"] = (2, 3) if (m["part"], m["parts"]) != (2, 3) else (1, 2)
    return "part/parts changed (names now disagree)", ("field tar_name",)


TAR_MUTATIONS = ("truncated", "grown", "extra", "missing", "symlink", "hardlink", "device", "fifo", "dir",
                 "traversal", "absolute", "duplicate", "garbage")


def _mutate_tar(tar: Path, m: dict, rng: random.Random) -> tuple[str, tuple[str, ...]]:
    kind = rng.choice(TAR_MUTATIONS)
    with tarfile.open(tar) as t:
        entries = [(info, t.extractfile(info).read()) for info in t]
    first = m["members"][0]["name"]
    if kind == "truncated":
        tar.write_bytes(tar.read_bytes()[: rng.randint(0, tar.stat().st_size - 1)])
        return kind, ("tarball stays", "tarball is missing")
    if kind == "grown":
        with open(tar, "ab") as fh:
            fh.write(b"\0" * rng.randint(1, 5000))
        return kind, ("tarball has",)
    if kind == "garbage":
        tar.write_bytes(rng.randbytes(rng.randint(1024, 20000)))
        sign(tar, m)
        return kind, ("not a readable tar", "not listed", "unsafe", "not a regular")
    if kind == "missing":
        entries = entries[1:]
        expect = ("missing",)
    elif kind == "duplicate":
        entries.append(entries[0])
        expect = ("appears twice",)
    else:
        if kind == "extra":
            extra = reg(f"{ccd_stem(m['expid'], 62)}.fits.fz", b"x" * 100)
            expect = ("not listed",)
        elif kind in ("traversal", "absolute"):
            extra = reg(f"../../{TOKEN}" if kind == "traversal" else f"/tmp/{TOKEN}", b"x" * 10)
            expect = ("unsafe path",)
        else:
            info = tarfile.TarInfo(first if rng.random() < 0.5 else f"{TOKEN}.lnk")
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "device": tarfile.CHRTYPE,
                         "fifo": tarfile.FIFOTYPE, "dir": tarfile.DIRTYPE}[kind]
            info.linkname = f"../../{TOKEN}" if kind in ("symlink", "hardlink") else ""
            extra = (info, None)
            expect = ("links are refused", "not a regular file", "appears twice")
        entries.insert(rng.randrange(len(entries) + 1), extra)
    write_tar(tar, entries)
    sign(tar, m)
    return kind, expect


FILE_MUTATIONS = ("tar-symlink", "manifest-symlink", "manifest-fifo", "tar-fifo", "tar-dir", "other-part",
                  "not-json", "deep-json", "bigint", "not-utf8", "not-object", "manifest-dir")


def _mutate_files(inbox: Path, tar: Path, mpath: Path, m: dict, rng: random.Random, outside: Path) -> tuple[str, tuple[str, ...]]:
    kind = rng.choice(FILE_MUTATIONS)
    text = json.dumps(m)
    if kind == "tar-symlink":
        target = outside / f"{TOKEN}-target-{tar.name}"
        os.replace(tar, target)
        tar.symlink_to(target)
        expect = ("not a regular file",)
    elif kind == "tar-fifo":
        tar.unlink()
        os.mkfifo(tar)
        expect = ("not a regular file",)
    elif kind == "tar-dir":
        tar.unlink()
        tar.mkdir()
        expect = ("not a regular file",)
    elif kind == "manifest-symlink":
        target = outside / f"{TOKEN}-target-{mpath.name}"
        target.write_text(text)
        mpath.symlink_to(target)
        return kind, ("not a regular file",)
    elif kind == "manifest-fifo":
        os.mkfifo(mpath)
        return kind, ("not a regular file",)
    elif kind == "manifest-dir":
        mpath.mkdir()
        return kind, ("not a regular file", "folder")
    elif kind == "other-part":  # a manifest that describes another part, under this part's name
        other = dict(m, expnum=m["expnum"] + 500_000, expid=f"DECam_{m['expnum'] + 500_000:08d}")
        other["tar_name"] = part_tar_name(other["expid"], m["part"], m["parts"])
        other["members"] = [dict(mm, name=f"{ccd_stem(other['expid'], mm['ccd'])}.fits.fz",
                                 header=ccd_header(other["expnum"], mm["ccd"])) for mm in m["members"]]
        text = json.dumps(other)
        expect = ("field expid: the manifest describes",)
    elif kind == "not-json":
        text = text[: rng.randint(0, len(text) - 1)]
        expect = ("not valid JSON",)
    elif kind == "deep-json":
        text = "[" * 100_000 + "]" * 100_000
        expect = ("not valid JSON", "field manifest")
    elif kind == "bigint":
        text = text.replace(f'"expnum": {m["expnum"]}', '"expnum": ' + "9" * 5000)
        expect = ("not valid JSON", "field expnum")
    elif kind == "not-utf8":
        mpath.write_bytes(text.encode()[:50] + b"\xff\xfe" + text.encode()[50:])
        return kind, ("not valid JSON",)
    else:
        text = json.dumps([m])
        expect = ("field manifest",)
    mpath.write_text(text)
    return kind, expect


def make_batch(inbox: Path, outside: Path, rng: random.Random, n_bad: int, n_good: int, expnum0: int) -> list[Case]:
    """``n_good`` good parts and ``n_bad`` bad ones (unique exposure numbers from ``expnum0``), tarballs first."""
    inbox.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    for i in range(n_good + n_bad):
        expnum = expnum0 + i
        k, n = (1, 1) if rng.random() < 0.5 else (rng.randint(1, 3), 3)
        tar, mpath, m = good_part(inbox, expnum, rng, k, n)
        stem = part_stem(m["expid"], k, n)
        if i < n_good:
            mpath.write_text(json.dumps(m, indent=1))
            cases.append(Case(stem, True, "good"))
            continue
        family = rng.choice(["manifest", "manifest", "tar", "files"])
        if family == "manifest":
            what, expect = _mutate_manifest(m, rng)
            try:
                mpath.write_text(json.dumps(m))
            except UnicodeEncodeError:  # a lone surrogate: write it escaped, as JSON allows
                mpath.write_text(json.dumps(m, ensure_ascii=True))
        elif family == "tar":
            what, expect = _mutate_tar(tar, m, rng)
            mpath.write_text(json.dumps(m))
        else:
            what, expect = _mutate_files(inbox, tar, mpath, m, rng, outside)
        cases.append(Case(stem, False, f"{family}: {what}", expect))
    return cases


def snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple]:
    """Every path under ``root`` outside ``skip``: type, size and mtime (symlinks not followed)."""
    out = {}
    skip_s = tuple(str(s) for s in skip)
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath.startswith(skip_s):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if p.startswith(skip_s):
                continue
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_size if not os.path.isdir(p) else 0, st.st_mtime_ns if not os.path.isdir(p) else 0)
    return out


def escaped(extra_roots: tuple[Path, ...], allowed: tuple[Path, ...]) -> list[str]:
    """Paths named with :data:`TOKEN` in ``extra_roots`` (top level) that are not under ``allowed``."""
    found = []
    for root in extra_roots:
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for name in names:
            p = os.path.join(root, name)
            if TOKEN in name and not p.startswith(tuple(str(a) for a in allowed)):
                found.append(p)
    return found


# =============================================================================== the tests
import time  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dwfhpc.errors import IntegrityError  # noqa: E402
from dwfhpc.ingest.inbox import Inbox  # noqa: E402
from dwfhpc.layout import check_component  # noqa: E402
from dwfhpc.parts import check_manifest_data, pack_exposure  # noqa: E402
from dwfhpc.parts.schema import MAX_MANIFEST_BYTES  # noqa: E402
from dwfhpc.statedb import StateDB  # noqa: E402

BATCHES = int(os.environ.get("DWF_FUZZ_BATCHES", "16"))
BAD_PER_BATCH, GOOD_PER_BATCH = 25, 3


@dataclass
class World:
    root: Path
    inbox: Path
    store: Path
    quarantine: Path
    db_path: Path
    outside: Path

    @property
    def allowed(self) -> tuple[Path, ...]:
        return (self.inbox, self.store, self.quarantine, self.db_path.parent)


def make_world(tmp: Path) -> World:
    """Configured folders deep inside ``tmp`` (so '../' x 4 from the store still lands in ``tmp``)."""
    work = tmp / "a" / "b" / "c" / "work"
    w = World(tmp, work / "inbox", work / "parts", work / "quarantine", work / "db" / "state.db", tmp / "outside")
    for d in (w.inbox, w.store, w.quarantine, w.db_path.parent, w.outside):
        d.mkdir(parents=True, exist_ok=True)
    (tmp / "a" / "b" / "sentinel.txt").write_text("untouched")
    return w


def run_batch(w: World, cases: list[Case], extra_good: list[str] = ()) -> dict:
    """Scan once; check every invariant; returns counts."""
    roots = (Path("/"), Path("/tmp"), *w.root.parents[:3], w.root)
    before_escaped = set(escaped(roots, w.allowed + (w.outside,)))
    before = snapshot(w.root, w.allowed)
    with StateDB(w.db_path) as db:
        box = Inbox(w.inbox, w.store, w.quarantine, db, mem_gb=1, time_minutes=5, arrival_grace=0, verify_threads=2)
        try:
            out = box.scan(now=time.time() + 1)
        finally:
            box.close()
        after = snapshot(w.root, w.allowed)
        assert after == before, f"written outside the configured folders: {sorted(set(after.items()) ^ set(before.items()))[:5]}"
        assert set(escaped(roots, w.allowed + (w.outside,))) == before_escaped
        good = {c.stem for c in cases if c.good} | set(extra_good)
        assert set(out.accepted) == good, [c.what for c in cases if c.stem in set(out.accepted) - good]
        reasons = dict(out.quarantined)
        for c in cases:
            if c.good:
                row = db.part(c.stem)
                assert row.state == "queued" and Path(row.tar).is_file() and Path(row.tar).is_relative_to(w.store)
                continue
            assert c.stem in reasons, f"{c.what}: not quarantined ({c.stem})"
            reason = reasons[c.stem]
            assert any(e in reason for e in c.expect), f"{c.what}: reason {reason!r} names none of {c.expect}"
            row = db.part(c.stem)
            assert row.state == "quarantined" and row.reason == reason
            assert db.tasks(expid=c.stem.split(".")[0]) == [], f"{c.what}: tasks queued for a bad part"
            folders = list(w.quarantine.glob(f"{c.stem}.*"))
            assert folders and any((f / "reason.txt").read_text().strip() == reason for f in folders)
        assert not any(w.inbox.iterdir()), f"left in the inbox: {sorted(p.name for p in w.inbox.iterdir())[:5]}"
        stored = {p.name for p in w.store.rglob("*") if p.is_file()}
        assert all(p.parent.parent == w.store for p in w.store.rglob("*") if p.is_file())
        assert {s for s in (n[: -len(".tar")] for n in stored if n.endswith(".tar"))} >= good
    return {"cases": len(cases), "bad": sum(not c.good for c in cases)}


def test_inbox_fuzz_batches(tmp_path):
    """BATCHES x (25 bad + 3 good) parts, each batch in one scan; the inbox keeps going and good parts are queued."""
    total = bad = 0
    kinds: dict[str, int] = {}
    t0 = time.perf_counter()
    for b in range(BATCHES):
        w = make_world(tmp_path / f"batch{b}")
        rng = random.Random(1900 + b)
        cases = make_batch(w.inbox, w.outside, rng, BAD_PER_BATCH, GOOD_PER_BATCH, expnum0=10_000 * (b + 1))
        for c in cases:
            kinds[c.what.split(":")[0]] = kinds.get(c.what.split(":")[0], 0) + 1
        counts = run_batch(w, cases)
        total, bad = total + counts["cases"], bad + counts["bad"]
    print(f"\nfuzz: {total} parts ({bad} bad) in {time.perf_counter() - t0:.1f} s; families {kinds}")
    assert bad >= BATCHES * BAD_PER_BATCH and set(kinds) == {"good", "manifest", "tar", "files"}


def test_a_real_packed_part_beside_bad_ones(tmp_path):
    """The packer's own output is accepted by the schema beside fuzzed parts (schema-version compatible)."""
    from dwfhpc.simulate import simulate_decam_exposure

    w = make_world(tmp_path)
    raw = simulate_decam_exposure(tmp_path / "raw", expnum=4242, ccds=[25, 32], seed=3, jobs=1)
    parts = pack_exposure(raw, tmp_path / "packed", codec="rice", parts=2, jobs=1)
    for p in parts:
        shutil.copyfile(p.tar, w.inbox / p.tar.name)
    cases = make_batch(w.inbox, w.outside, random.Random(7), 10, 0, expnum0=5_000)
    for p in parts:
        shutil.copyfile(p.manifest, w.inbox / p.manifest.name)
    run_batch(w, cases, extra_good=[p.tar.name[: -len(".tar")] for p in parts])


def test_a_100_mb_manifest_is_quarantined_without_being_read(tmp_path):
    w = make_world(tmp_path)
    tar, mpath, m = good_part(w.inbox, 31337, random.Random(1))
    with open(mpath, "w") as fh:
        fh.write('{"schema": "dwfhpc.part/1", "pad": "')
        block = "x" * (1 << 20)
        for _ in range(100):
            fh.write(block)
        fh.write('"}')
    assert mpath.stat().st_size > 100 * (1 << 20) > MAX_MANIFEST_BYTES
    t = time.perf_counter()
    run_batch(w, [Case(mpath.name[: -len(".manifest.json")], False, "100 MB manifest", ("field manifest: is",))])
    assert time.perf_counter() - t < 10


def test_the_issue_19_part_is_quarantined_with_the_fields_named(tmp_path):
    """The report of issue 19: a genuine tarball, night ../../../../x-night, expid ../../x-exp."""
    w = make_world(tmp_path)
    tar, mpath, m = good_part(w.inbox, 19, random.Random(19))
    m["night"] = f"../../../../{TOKEN}-night"
    mpath.write_text(json.dumps(m))
    run_batch(w, [Case(mpath.name[: -len(".manifest.json")], False, "night", ("field night",))])
    tar, mpath, m = good_part(w.inbox, 20, random.Random(20))
    m["expid"] = f"../../{TOKEN}-exp"
    mpath.write_text(json.dumps(m))
    run_batch(w, [Case(mpath.name[: -len(".manifest.json")], False, "expid", ("field expid",))])
    assert not list(w.root.rglob(f"*{TOKEN}*"))


# ------------------------------------------------------------------------------- schema property
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=10)
_BASE = manifest_dict(123, [25, 32], 1, 2, {25: b"a" * 10, 32: b"b" * 20})
_BASE["tar_bytes"], _BASE["tar_sha256"] = 10240, "ab" * 32
_PATH_FIELDS = ("expid", "night", "filter", "tar_name")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(sorted(_BASE) + ["members.0.name", "members.0.ccd", "members.1.header", "extra"]),
       value=_json | st.sampled_from(WEIRD_STRINGS + ["../x", "..", "2026-11-24", "DECam_00000123"]))
def test_schema_never_lets_an_unsafe_value_through(key, value):
    """Any value in any field: an IntegrityError naming a field, or a manifest whose path values are plain names."""
    m = copy.deepcopy(_BASE)
    if key.startswith("members."):
        _, i, sub = key.split(".")
        m["members"][int(i)][sub] = value
    else:
        m[key] = value
    try:
        check_manifest_data(json.loads(json.dumps(m)))
    except IntegrityError as exc:
        assert exc.problem.startswith("field "), exc.problem
        return
    for f in _PATH_FIELDS:
        # an empty filter is allowed (a bias has none): paths use "none" for it (layout.library_path, master_path)
        check_component((m[f] or "none") if f == "filter" else m[f], f)
    for mm in m["members"]:
        check_component(mm["name"], "name")
        assert mm["name"].startswith(m["expid"] + "_")


def test_schema_accepts_the_synthetic_part_as_written():
    check_manifest_data(json.loads(json.dumps(_BASE)))


def test_a_bad_copy_of_an_accepted_part_does_not_overwrite_its_record(tmp_path):
    w = make_world(tmp_path)
    tar, mpath, m = good_part(w.inbox, 77, random.Random(77))
    mpath.write_text(json.dumps(m))
    stem = mpath.name[: -len(".manifest.json")]
    run_batch(w, [Case(stem, True, "good")])
    tar, mpath, m = good_part(w.inbox, 77, random.Random(77))
    tar.unlink()
    tar.symlink_to(w.outside / "nowhere.tar")  # dangling: still quarantined, not left behind
    mpath.write_text(json.dumps(m))
    with StateDB(w.db_path) as db:
        box = Inbox(w.inbox, w.store, w.quarantine, db, mem_gb=1, time_minutes=5, arrival_grace=0, verify_threads=1)
        out = box.scan()
        assert [s for s, _ in out.quarantined] == [stem] and not any(w.inbox.iterdir())
        row = db.part(stem)
        assert row.state == "queued" and Path(row.tar).is_file()
