"""Hostile input to ``dwfhpc receive`` and to the config loader is refused with a reason; the process goes on.

Issue 26, findings 10 and 11: the receiver runs as a real ``dwfhpc receive`` process on real pipes
and real staging/inbox folders; the config loader reads real files in a real subprocess (time and
peak memory measured there); HSC ids are read from the real shipped HSC header, edited.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from astropy.io import fits

import dwfhpc
from dwfhpc.instruments import DECam, HSC, identify

REPO = Path(dwfhpc.__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
RECEIVE = [sys.executable, "-m", "dwfhpc", "receive"]
HSC_FILE = REPO / "dwfhpc" / "data" / "HSCA90333426.headeronly.fits"


# --------------------------------------------------------------------------- helpers
def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_part(folder: Path, expnum: int, size: int = 50_000) -> tuple[Path, Path]:
    """A part's tarball and manifest as the receiver sees them (it reads only ``tar_sha256``)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"DECam_{expnum:08d}.p1of1"
    tar, manifest = folder / f"{stem}.tar", folder / f"{stem}.manifest.json"
    tar.write_bytes(hashlib.sha256(stem.encode()).digest() * (size // 32))
    manifest.write_text(json.dumps({"expid": stem.split(".")[0], "tar_sha256": sha(tar.read_bytes())}))
    return tar, manifest


def frame(name: str, data: bytes) -> bytes:
    return json.dumps({"name": name, "bytes": len(data), "sha256": sha(data)}).encode() + b"\n" + data


def file_frame(path: Path) -> bytes:
    return frame(path.name, path.read_bytes())


def receive(tmp_path: Path, stdin: bytes, *args: str) -> tuple[int, list[dict], str]:
    """Run a real receiver on ``stdin``: exit code, its answers, its standard error."""
    proc = subprocess.run([*RECEIVE, "--staging", str(tmp_path / "staging"), "--inbox", str(tmp_path / "inbox"),
                           *args], input=stdin, capture_output=True, timeout=120, env=ENV)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr.decode()


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# --------------------------------------------------------------------------- finding 10: the receiver
BAD_MANIFESTS = {
    "list": (b"[]", "a JSON list, not an object"),
    "string": (b'"tar_sha256"', "a JSON str, not an object"),
    "number": (b"42", "a JSON int, not an object"),
    "null": (b"null", "a JSON NoneType, not an object"),
    "deep": (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    "not-utf8": (b'{"tar_sha256": "\xff\xfe"}', "not JSON"),
    "digest-not-text": (b'{"tar_sha256": ["a"]}', "no valid tar_sha256"),
    "digest-newline": (json.dumps({"tar_sha256": "a" * 64 + "\n"}).encode(), "no valid tar_sha256"),
}


@pytest.mark.parametrize("kind", list(BAD_MANIFESTS))
def test_a_manifest_that_is_not_a_json_object_is_refused_and_the_stream_goes_on(tmp_path, kind):
    content, reason = BAD_MANIFESTS[kind]
    bad_tar, bad_manifest = make_part(tmp_path / "out", 1100001)
    good = make_part(tmp_path / "out", 1100002)
    stdin = file_frame(bad_tar) + frame(bad_manifest.name, content) + b"".join(file_frame(f) for f in good)
    rc, answers, stderr = receive(tmp_path, stdin)
    assert rc == 0, stderr
    assert "Traceback" not in stderr
    assert answers[1] == {"name": bad_tar.name, "ok": True}
    assert answers[2]["name"] == bad_manifest.name and answers[2]["retryable"] is False
    assert answers[2]["error"].startswith("manifest not usable") and reason in answers[2]["error"]
    assert answers[3:] == [{"name": f.name, "ok": True} for f in good]  # the frames after it are not lost
    assert names(tmp_path / "inbox") == sorted(f.name for f in good)
    assert bad_manifest.name not in names(tmp_path / "staging")


@pytest.mark.parametrize("header", [b"[" * 4000 + b"\n", b"\xff\xfe\n", b"[]\n", b'"a"\n', b"7\n"],
                         ids=["deep", "not-utf8", "list", "string", "number"])
def test_an_unreadable_frame_header_ends_the_receiver_cleanly_with_the_reason(tmp_path, header):
    tar, _ = make_part(tmp_path / "out", 1100001)
    rc, answers, stderr = receive(tmp_path, file_frame(tar) + header + file_frame(tar))
    assert rc == 2 and "Traceback" not in stderr
    assert answers[1] == {"name": tar.name, "ok": True}
    assert answers[2]["name"] is None and answers[2]["error"].startswith("protocol: not a frame header")
    assert len(answers) == 3
    assert "dwfhpc receive: stopping: protocol: not a frame header" in stderr


def test_a_name_ending_in_a_newline_is_refused_before_any_file(tmp_path):
    tar, _ = make_part(tmp_path / "out", 1100001)
    rc, answers, stderr = receive(tmp_path, frame(tar.name + "\n", tar.read_bytes()))
    assert rc == 2 and answers[-1]["name"] is None and "not a part name" in answers[-1]["error"]
    assert names(tmp_path / "staging") == [] and names(tmp_path / "inbox") == []


def test_a_sender_that_goes_away_ends_the_receiver_cleanly(tmp_path):
    """Answers that cannot be written (the reading end closed) end the receiver with a message, no traceback."""
    parts = [make_part(tmp_path / "out", 1100001 + i) for i in range(3)]
    proc = subprocess.Popen([*RECEIVE, "--staging", str(tmp_path / "staging"), "--inbox", str(tmp_path / "inbox")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    assert json.loads(proc.stdout.readline()) == {"hello": "dwfhpc-receive/1"}
    proc.stdout.close()
    try:
        proc.stdin.write(b"".join(file_frame(f) for part in parts for f in part))
        proc.stdin.close()
    except BrokenPipeError:
        pass
    rc = proc.wait(timeout=60)
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert rc == 3, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert "dwfhpc receive: stopping: the sender went away" in stderr


def _age(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def _age_dir(path: Path) -> Path:
    path.mkdir()
    return _age(path, 7200)


def test_orphans_in_staging_are_reported_and_removed_when_the_receiver_starts(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    old_tar = _age(make_part(staging, 1100009)[0], 7200)  # its manifest never came
    (staging / "DECam_01100009.p1of1.manifest.json").unlink()
    old_tmp = staging / ".DECam_01100008.p1of1.tar.4242.receiving"  # a receiver killed mid-frame
    old_tmp.write_bytes(b"x" * 1000)
    _age(old_tmp, 7200)
    fresh = staging / "DECam_01100007.p1of1.tar"  # a frame just received: its manifest may still come
    fresh.write_bytes(b"y")
    other = staging / "notes.txt"  # not the receiver's: never touched
    other.write_text("keep")
    _age(other, 7200)
    folder = _age_dir(staging / "DECam_01100006.p1of1.tar")  # a folder named like a part: never touched
    good = make_part(tmp_path / "out", 1100002)
    rc, answers, stderr = receive(tmp_path, b"".join(file_frame(f) for f in good))
    assert rc == 0 and answers[1:] == [{"name": f.name, "ok": True} for f in good]
    assert names(staging) == sorted([fresh.name, other.name, folder.name])
    lines = [line for line in stderr.splitlines() if "removed orphan" in line]
    assert len(lines) == 2
    assert any(str(old_tar) in line and "a tarball whose manifest never came" in line for line in lines)
    assert any(str(old_tmp) in line and "ended inside a frame" in line for line in lines)


def test_orphans_are_swept_periodically_while_the_receiver_runs(tmp_path):
    """A real receiver process (``serve`` with a 2 s orphan age) removes an orphan that appears while it waits."""
    staging, inbox = tmp_path / "staging", tmp_path / "inbox"
    code = ("import sys; from dwfhpc.link.receiver import serve; "
            f"sys.exit(serve(sys.stdin.buffer, sys.stdout.buffer, {str(staging)!r}, {str(inbox)!r}, orphan_seconds=2))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    try:
        assert json.loads(proc.stdout.readline()) == {"hello": "dwfhpc-receive/1"}
        orphan = staging / "DECam_01100001.p1of1.tar"
        orphan.write_bytes(b"z" * 10)
        deadline = time.monotonic() + 20
        while orphan.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not orphan.exists()
        good = make_part(tmp_path / "out", 1100002)
        proc.stdin.write(b"".join(file_frame(f) for f in good))
        proc.stdin.flush()
        assert [json.loads(proc.stdout.readline()) for _ in good] == [{"name": f.name, "ok": True} for f in good]
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read().decode()
    assert f"removed orphan {orphan}" in stderr and "a tarball whose manifest never came" in stderr


# --------------------------------------------------------------------------- finding 11: the config loader
def billion_laughs(path: Path) -> Path:
    """A site config of ~1.7 KB whose aliases expand to 10**10 values under an unknown key."""
    lines = ["name: bomb", "lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        lines.append(f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    lines += ["push:", "  not_a_setting: *l9", "scheduler:", "  setup: *l9"]
    text = "\n".join(lines) + "\n"
    path.write_text(text + "#" * max(0, 1700 - len(text)) + "\n")
    return path


MEASURE = textwrap.dedent("""
    import json, resource, sys, time
    from dwfhpc.config import load_any
    from dwfhpc.errors import ConfigError
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try:
        load_any(sys.argv[1])
        error = None
    except ConfigError as exc:
        error = str(exc)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "grew_kb": after - before, "error": error}))
""")


def measure_load(path: Path) -> dict:
    """Load ``path`` in a fresh process capped at 2 GB of address space: seconds, peak memory growth, error."""
    def cap() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    proc = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, env=ENV,
                          timeout=60, preexec_fn=cap)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_a_yaml_alias_bomb_is_refused_fast_in_little_memory_naming_the_file(tmp_path):
    bomb = billion_laughs(tmp_path / "bomb.yaml")
    assert 1500 < bomb.stat().st_size < 2000
    got = measure_load(bomb)
    assert got["error"] is not None and got["error"].startswith(f"{bomb}: ")
    assert "YAML aliases" in got["error"] and "alias bomb" in got["error"]
    assert got["seconds"] < 1.0
    assert got["grew_kb"] < 50_000  # ru_maxrss is in KiB on Linux: under 50 MB more than after the imports
    # the CLI says the same, on one line, and exits with the error status
    proc = subprocess.run([sys.executable, "-m", "dwfhpc", "config", "check", str(bomb)], capture_output=True,
                          text=True, env=ENV, timeout=60, preexec_fn=lambda: __import__("resource").setrlimit(
                              __import__("resource").RLIMIT_AS, (2 << 30, 2 << 30)))
    assert proc.returncode == 2 and f"{bomb}: more than" in proc.stderr and "Traceback" not in proc.stderr
    # modest aliases, as a person writes them, still load
    modest = tmp_path / "modest.yaml"
    modest.write_text("name: modest\nscheduler:\n  setup: &setup [module load python, module load git]\n"
                      "  extra: {comment: x}\nnode:\n  binds: *setup\n")
    assert measure_load(modest)["error"] is None


@pytest.mark.parametrize("kind", ["recursive", "deep", "not-utf8", "huge", "long-string-repeated"])
def test_other_hostile_yaml_is_a_config_error_naming_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.yaml"
    if kind == "recursive":
        path.write_text("name: r\nnode: &n\n  binds: [*n]\n")
        reason = "refers to the value it is part of"
    elif kind == "deep":
        path.write_text("name: d\nscheduler:\n  extra: " + "[" * 3000 + "]" * 3000 + "\n")
        reason = "nested deeper than"
    elif kind == "long-string-repeated":  # few values, but 9000 x 100 kB would land in every job script
        path.write_text("name: s\nscheduler:\n  setup: [&b " + "x" * 100_000 + ", " + ", ".join(["*b"] * 9000) + "]\n")
        reason = "characters once its YAML aliases are expanded"
    elif kind == "not-utf8":
        path.write_bytes(b"name: \xff\xfe\n")
        reason = "not UTF-8 text"
    else:
        path.write_text("name: h\n" + "#" * (2 << 20) + "\n")
        reason = "not a configuration file"
    got = measure_load(path)
    assert got["error"] is not None and got["error"].startswith(f"{path}: ") and reason in got["error"]
    # deep brackets: bounded (composing stops at 64 levels) but PyYAML's scanner still reads ~1024
    # bracket tokens ahead with a per-token cost per open level: ~1.5 s here whatever the file's size
    assert got["seconds"] < (10.0 if kind == "deep" else 1.0)


# --------------------------------------------------------------------------- HSC ids; `$` in name patterns
def hsc_header(**values: str) -> fits.Header:
    """The shipped HSC header without INSTRUME (so the ids decide), with keywords set or deleted (None)."""
    header = fits.getheader(HSC_FILE)
    del header["INSTRUME"]
    for key, value in values.items():
        key = key.replace("_", "-")
        if value is None:
            header.remove(key, ignore_missing=True, remove_all=True)
        else:
            header[key] = value
    return header


@pytest.mark.parametrize("exp_id, frame_id, visit", [
    ("HSCA90333400", "HSCA90333426", 903334),  # the shipped 8-digit ids: unchanged
    ("HSCE00123456", "HSCA12345626", 123456),  # the 2016-06-14 scheme: HSCE + the visit in 8 digits
    ("HSCA1234500", "HSCA1234526", 12345),  # 7 digits: a 5-digit visit
    ("HSCA123456700", "HSCA123456726", 1234567),  # 9 digits: a 7-digit visit
    ("HSCA00000000", "HSCA123456727", 1234566),  # visit 0 in EXP-ID: FRAMEID's visit, rounded down to even
    (None, "HSCB1234501", 12344),  # no EXP-ID: FRAMEID alone, 7 digits, odd -> even
])
def test_hsc_ids_of_6_to_10_digits_are_recognised_and_give_the_visit(exp_id, frame_id, visit):
    header = hsc_header(EXP_ID=exp_id, FRAMEID=frame_id)
    assert identify(header) is not None and identify(header)[0] == "hsc"
    assert HSC().expnum(header) == visit
    assert HSC().expid(header) == f"HSC_{visit:07d}"


def test_no_name_or_id_pattern_accepts_a_trailing_newline_or_a_near_miss():
    from dwfhpc.instruments.hsc import FRAME_ID
    from dwfhpc.layout import PART_RE
    from dwfhpc.link.protocol import PART_FILE_RE, SHA256_RE
    from dwfhpc.parts import schema

    assert not HSC.is_raw_name("HSCA90333426.fits\n") and HSC.is_raw_name("HSCA90333426.fits")
    assert HSC.is_raw_name("HSCA1234567826.fits.fz")  # an 8-digit visit
    assert not DECam.is_raw_name("DECam_00200666.fits.fz\n") and DECam.is_raw_name("DECam_00200666.fits.fz")
    assert FRAME_ID.match("HSCA90333400") and not FRAME_ID.match("HSCA90333400\n")
    for value in ("HSCA12345", "HSCA12345678901", "HSCa90333400", "XHSCA90333400"):  # not HSC ids
        assert identify(hsc_header(EXP_ID=value, FRAMEID=value)) is None, value
    valid = {schema.NIGHT_RE: "2026-01-02", schema.DATE_OBS_RE: "2026-01-02T03:04:05.6", schema.FILTER_RE: "r",
             schema.TEXT_RE: "field", schema.SHA256_RE: "a" * 64, schema.CREATED_RE: "2026-01-02T03:04:05Z",
             schema.HEADER_RE: "SIMPLE  =", PART_RE: "DECam_00200666.p1of4", SHA256_RE: "b" * 64,
             PART_FILE_RE: "DECam_00200666.p1of4.manifest.json",
             schema.EXPID_FORMAT["decam"][1]: "DECam_00200666", schema.EXPID_FORMAT["hsc"][1]: "HSC_0903334"}
    for pattern, text in valid.items():
        assert pattern.match(text), pattern.pattern
        assert not pattern.match(text + "\n"), pattern.pattern
