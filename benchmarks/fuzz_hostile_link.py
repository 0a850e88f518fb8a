"""Issue 26, hostile input to the receiver and the config loader: rows of ``benchmarks/fuzz_inbox.py --hostile``.

- receiver frames: one real ``python -m dwfhpc receive`` process a round, on real pipes and folders, fed a
  part whose manifest frame is not a JSON object (``[]``, a string, a number, ``null``, 200 000 nested
  brackets, bytes that are not UTF-8), each followed by a good part: handled = the bad manifest answered
  with a non-retryable error and the good part after it published in the inbox; daemon exits = the
  receiver died (it is started again for the next case); time = from the first frame to the last answer.
- YAML alias bomb: ``dwfhpc config check`` (the CLI's ``main`` in a fresh process capped at 2 GB of
  address space) on billion-laughs site files: handled = exit 2 naming the file in under 2 s after the
  imports; time = that refusal; notes: the whole command's wall time and its peak RSS growth. Besides nested
  aliases: one long string aliased thousands of times in ``scheduler.setup`` (few values, but every job
  script renders each of them: ``templates.array_script``).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}

BAD_MANIFESTS = {  # what the frame holds, words the error must name
    "[]": (b"[]", "a JSON list, not an object"),
    '"str"': (b'"tar_sha256"', "a JSON str, not an object"),
    "5": (b"5", "a JSON int, not an object"),
    "null": (b"null", "a JSON NoneType, not an object"),
    "200k nested": (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    "not UTF-8": (b'{"tar_sha256": "\xff\xfe"}', "not JSON"),
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _frame(name: str, data: bytes) -> bytes:
    return json.dumps({"name": name, "bytes": len(data), "sha256": _sha(data)}).encode() + b"\n" + data


def _part(expnum: int) -> list[tuple[str, bytes]]:
    stem = f"DECam_{expnum:08d}.p1of1"
    tar = hashlib.sha256(stem.encode()).digest() * 1500
    return [(f"{stem}.tar", tar), (f"{stem}.manifest.json",
                                    json.dumps({"expid": stem.split(".")[0], "tar_sha256": _sha(tar)}).encode())]


class Receiver:
    """A real ``dwfhpc receive``; its answers read by a thread (a dead receiver never hangs the campaign)."""

    def __init__(self, root: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "dwfhpc", "receive", "--staging", str(root / "staging"),
                                      "--inbox", str(root / "inbox")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=ENV)
        self.answers: queue.Queue = queue.Queue()
        self.stderr: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        self.hello = self.answer(60)

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.answers.put(json.loads(line))
            except ValueError:
                self.answers.put({"unreadable": line.decode(errors="replace")})
        self.answers.put(None)

    def answer(self, timeout: float) -> dict | None:
        try:
            return self.answers.get(timeout=timeout)
        except queue.Empty:
            return None

    def send(self, data: bytes) -> bool:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def close(self) -> int | None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by its handle
            self.proc.wait()
            return None


def receiver_rows(rounds: int, row: dict, failures: list[str], work: Path) -> None:
    n = 900_000
    for r in range(rounds):
        root = work / f"receive-{r}"
        root.mkdir()
        rx = Receiver(root)
        for what, (content, words) in BAD_MANIFESTS.items():
            n += 2
            label = f"receiver frames: {what}"
            if rx.hello != {"hello": "dwfhpc-receive/1"}:
                row["exits"] += 1
                failures.append(f"{label}: the receiver did not start (exit {rx.proc.poll()}, hello {rx.hello}): "
                                f"{b''.join(rx.stderr)[-500:].decode(errors='replace')}")
                rx.close()
                rx = Receiver(root)
            (bad_tar, tar_bytes), (bad_manifest, _) = _part(n)
            good = _part(n + 1)
            frames = [(bad_tar, tar_bytes), (bad_manifest, content)] + good
            t0 = time.perf_counter()
            sent = rx.send(b"".join(_frame(name, data) for name, data in frames))
            answers = [rx.answer(30) for _ in frames] if sent else []
            row["scans"].append(time.perf_counter() - t0)
            inbox = root / "inbox"
            ok = (len(answers) == 4 and answers[0] == {"name": bad_tar, "ok": True}
                  and (answers[1] or {}).get("name") == bad_manifest and answers[1].get("retryable") is False
                  and words in answers[1].get("error", "")
                  and answers[2:] == [{"name": name, "ok": True} for name, _ in good]
                  and all((inbox / name).is_file() for name, _ in good) and not (inbox / bad_manifest).exists())
            row["cases"] += 1
            row["handled"] += ok
            if not ok:
                failures.append(f"{label}: not handled: answers {answers}")
            if rx.proc.poll() is not None:  # counted once; the next case gets a new receiver
                row["exits"] += 1
                failures.append(f"{label}: the receiver died (exit {rx.proc.poll()}): "
                                f"{b''.join(rx.stderr)[-500:].decode(errors='replace')}")
                rx.close()
                rx = Receiver(root)
        rc = rx.close()
        stderr = b"".join(rx.stderr).decode(errors="replace")
        if rc != 0 or "Traceback" in stderr:
            failures.append(f"receiver frames: round {r}: exit {rc} at the end of input: {stderr[-500:]}")
        if {p.name for p in root.iterdir()} != {"inbox", "staging"}:
            row["outside"] += 1


# ------------------------------------------------------------------------------------------- YAML bombs
def billion_laughs(path: Path, where: str, levels: int = 9) -> Path:
    """A site config whose aliases expand to 10**(levels + 1) values at ``where`` (a dotted key)."""
    lines = ["name: bomb", "lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    section, key = where.split(".")
    lines += [f"{section}:", f"  {key}: *l{levels}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def quadratic(path: Path, size: int, count: int) -> Path:
    """No nesting: one ``size``-byte string referred to ``count`` times in ``scheduler.setup`` (the lines every
    PBS / Slurm script gets: ``size * count`` bytes of script once rendered)."""
    path.write_text("name: quad\nscheduler:\n  setup: [&b " + "x" * size + ", " + ", ".join(["*b"] * count) + "]\n")
    return path


CHECK = textwrap.dedent("""
    import contextlib, io, json, resource, sys, time
    from dwfhpc.cli import main
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err):
        try:
            rc = main(["config", "check", sys.argv[1]])
        except SystemExit as exc:
            rc = exc.code
    seconds = time.perf_counter() - t0
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"rc": rc, "seconds": seconds, "grew_kb": grew, "stderr": err.getvalue()}))
""")


def _cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def yaml_rows(rounds: int, row: dict, failures: list[str], work: Path) -> None:
    cases = {"10^10 under an unknown key": lambda p: billion_laughs(p, "push.not_a_setting"),
             "10^10 as node.binds": lambda p: billion_laughs(p, "node.binds"),
             "10^13 as scheduler.setup": lambda p: billion_laughs(p, "scheduler.setup", levels=12),
             "20 kB string x 12000 in setup (240 MB)": lambda p: quadratic(p, 20_000, 12_000),
             "100 kB string x 9000 in setup (900 MB)": lambda p: quadratic(p, 100_000, 9_000)}
    walls, grew = [], []
    for r in range(rounds):
        for what, make in cases.items():
            path = make(work / f"bomb-{r}-{len(walls)}.yaml")
            t0 = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, "-c", CHECK, str(path)], capture_output=True, text=True,
                                      env=ENV, timeout=60, preexec_fn=_cap)
                got = json.loads(proc.stdout.splitlines()[-1]) if proc.returncode == 0 and proc.stdout else None
            except subprocess.TimeoutExpired:
                proc, got = None, None
            walls.append(time.perf_counter() - t0)
            row["cases"] += 1
            if got is None:
                row["exits"] += 1
                failures.append(f"YAML alias bomb: {what}: the check process died or hung: "
                                f"{proc.stderr[-500:] if proc else 'timeout'}")
                continue
            row["scans"].append(got["seconds"])
            grew.append(got["grew_kb"])
            ok = got["rc"] == 2 and f"{path}: " in got["stderr"] and "Traceback" not in got["stderr"] \
                and got["seconds"] < 2.0
            row["handled"] += ok
            if not ok:
                failures.append(f"YAML alias bomb: {what}: rc {got['rc']} in {got['seconds']:.2f} s: "
                                f"{got['stderr'][-300:]!r}")
    row["notes"] = (f"whole command (interpreter + imports) max {max(walls):.1f} s, "
                    f"peak RSS growth max {max(grew or [0]) / 1024:.1f} MB")


def rows(rounds: int, new_row) -> tuple[dict[str, dict], list[str]]:
    table = {"receiver frames": new_row(), "YAML alias bomb": new_row()}
    failures: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="dwf-hostile-link-"))
    try:
        receiver_rows(rounds, table["receiver frames"], failures, work)
        yaml_rows(rounds, table["YAML alias bomb"], failures, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return table, failures
