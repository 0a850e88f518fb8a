"""``apptainer exec`` command lines (argv lists, never a shell string) and running them.

Node jobs run their calibration step inside an image with the task's scratch folder, the
products folder and any read-only inputs bound at the same paths inside, so every path in the
command means the same thing inside and outside the container.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DwfError

_FORBIDDEN = (",", ":", "\n", "\0")


def bind_spec(path: str | os.PathLike[str], *, read_only: bool = False) -> str:
    """One ``--bind`` entry for a host path mounted at the same place (``:ro`` when asked)."""
    text = str(path)
    if not os.path.isabs(text):
        raise DwfError("bind paths must be absolute", text)
    if any(c in text for c in _FORBIDDEN):
        raise DwfError("a path bound into a container may not contain ',' or ':'", text)
    return f"{text}:{text}:ro" if read_only else text


def _check_extra_bind(entry: str) -> str:
    """A site-configured bind ``src[:dest[:opts]]``: absolute paths, no commas."""
    if "," in entry or not entry or "\n" in entry or "\0" in entry:
        raise DwfError("a configured bind may not contain ',' (give one path per entry)", entry)
    src = entry.split(":", 1)[0]
    if not os.path.isabs(src):
        raise DwfError("a configured bind must start with an absolute path", entry)
    return entry


def merge_binds(entries: Iterable[str]) -> list[str]:
    """Binds in order, duplicates dropped; a path bound read-write wins over the same path read-only."""
    out: list[str] = []
    rw = {e for e in entries if ":" not in e}
    seen = set()
    for e in entries:
        src = e.split(":", 1)[0]
        if e.endswith(":ro") and src in rw:
            continue
        if e not in seen:
            seen.add(e)
            out.append(e)
    return out


def exec_argv(image: str | os.PathLike[str], command: Sequence[str], *, binds: Sequence[str] = (),
              env: Mapping[str, str] | None = None, pwd: str | os.PathLike[str] | None = None,
              apptainer: str = "apptainer", cleanenv: bool = False) -> list[str]:
    """``[apptainer, exec, --bind b1,b2,..., --env K=V ..., --pwd DIR, IMAGE, *command]``.

    ``binds`` are ready entries (see :func:`bind_spec`); site binds may carry ``:dest:opts``.
    Pure: nothing is checked on disk.
    """
    if not command:
        raise DwfError("empty command for apptainer exec")
    argv = [apptainer, "exec"]
    if cleanenv:
        argv.append("--cleanenv")
    entries = merge_binds([_check_extra_bind(b) for b in binds])
    if entries:
        argv += ["--bind", ",".join(entries)]
    for key, value in (env or {}).items():
        if not key.isidentifier() or "," in str(value) or "\n" in str(value):
            raise DwfError(f"environment variable {key}={value!r} cannot be passed with --env")
        argv += ["--env", f"{key}={value}"]
    if pwd is not None:
        argv += ["--pwd", str(pwd)]
    argv.append(str(image))
    argv += [str(c) for c in command]
    return argv


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int
    seconds: float
    log: Path | None


def run_command(argv: Sequence[str], *, what: str, log: Path | None = None, cwd: str | os.PathLike[str] | None = None,
                timeout: float | None = None) -> CommandResult:
    """Run ``argv`` (no shell); output to ``log``; a non-zero exit is a :class:`DwfError` with the log's tail."""
    argv = [str(a) for a in argv]
    t = time.perf_counter()
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        try:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, timeout=timeout, check=False)
        except FileNotFoundError:
            raise DwfError(f"{what}: command not found: {argv[0]}") from None
        except subprocess.TimeoutExpired:
            raise DwfError(f"{what}: timed out after {timeout:g} s") from None
    finally:
        if log:
            out.close()
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        tail = ""
        if log and log.exists():
            lines = log.read_text(errors="replace").strip().splitlines()
            tail = f": {lines[-1][:300]}" if lines else ""
        raise DwfError(f"{what} failed (exit {proc.returncode}){tail}", argv[0])
    return CommandResult(argv, proc.returncode, seconds, log)
