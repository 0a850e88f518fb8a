"""Apptainer images: build from ``containers/``, smoke-test, deploy with a ``current`` link, roll back.

Deployed layout (``--to DIR``)::

    DIR/<name>-<version>-<sha8>.sif         versioned images
    DIR/<name>-<version>-<sha8>.sif.sha256  their checksums
    DIR/<name>.sif -> <the current one>     what jobs use (node.image)
    DIR/<name>.previous.sif -> <the one before>
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from . import __version__
from .atomic import atomic_path, sha256_file
from .errors import DwfError

REPO = Path(__file__).resolve().parents[1]


def definition(name: str) -> Path:
    """``containers/<name>.def`` from the repository (the image recipes are not package data)."""
    for base in (REPO / "containers", Path(str(resources.files("dwfhpc"))).parent / "containers"):
        path = base / f"{name}.def"
        if path.is_file():
            return path
    raise DwfError(f"no image recipe containers/{name}.def (run from a checkout of dwfhpc)")


def apptainer() -> str:
    exe = shutil.which("apptainer") or shutil.which("singularity")
    if not exe:
        raise DwfError("apptainer is not installed (see .ci/apptainer/install-apptainer.sh)")
    return exe


def default_mirror() -> str:
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in f.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def _commit() -> str:
    proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def build_image(name: str, out: Path, *, build_args: dict[str, str] | None = None, fakeroot: bool | None = None,
                log=None) -> Path:
    """Build ``containers/<name>.def`` into ``out`` (a wheel of this checkout is built and copied in)."""
    recipe = definition(name)
    exe = apptainer()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dwfwheel-") as wheeldir:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheeldir, str(REPO)], check=True,
                       stdout=subprocess.DEVNULL)
        wheel = next(Path(wheeldir).glob("dwfhpc-*.whl")).name
        args = {"mirror": default_mirror(), "wheeldir": wheeldir, "wheel": wheel, "version": __version__,
                "commit": _commit(), **(build_args or {})}
        if fakeroot is None:
            fakeroot = True  # plain root lacks CAP_SYS_RESOURCE on many build hosts; fakeroot always works
        argv = [exe, "build", "--force"] + (["--fakeroot"] if fakeroot else [])
        for k, v in args.items():
            argv += ["--build-arg", f"{k}={v}"]
        tmp = out.with_name(f".{out.name}.building")
        proc = subprocess.run(argv + [str(tmp), str(recipe)], stdout=log or None, stderr=subprocess.STDOUT if log else None)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise DwfError(f"apptainer build failed (exit {proc.returncode})", recipe)
        os.replace(tmp, out)
    return out


def check_image(image: Path) -> str:
    """Smoke test: ``dwfhpc --version`` inside the image."""
    image = Path(image)
    if not image.is_file():
        raise DwfError("no such image", image)
    proc = subprocess.run([apptainer(), "exec", str(image), "dwfhpc", "--version"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DwfError(f"image does not run dwfhpc: {proc.stderr.strip()[-300:]}", image)
    return proc.stdout.strip()


def _relink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def deploy_image(name: str, image: Path, to: Path) -> Path:
    """Copy ``image`` into ``to`` under a versioned name (atomically) and point ``<name>.sif`` at it."""
    image, to = Path(image), Path(to)
    if not image.is_file():
        raise DwfError("no such image", image)
    digest = sha256_file(image)
    target = to / f"{name}-{__version__}-{digest[:8]}.sif"
    if not target.exists():
        with atomic_path(target) as tmp:
            shutil.copyfile(image, tmp)
        if sha256_file(target) != digest:
            target.unlink()
            raise DwfError("copy does not match the image's sha256", target)
        (to / f"{target.name}.sha256").write_text(f"{digest}  {target.name}\n")
    current = to / f"{name}.sif"
    if current.is_symlink() and os.readlink(current) != target.name:
        _relink(to / f"{name}.previous.sif", os.readlink(current))
    _relink(current, target.name)
    return target


def rollback_image(name: str, to: Path) -> Path:
    """Make the previous deployment current again (and the current one previous)."""
    to = Path(to)
    current, previous = to / f"{name}.sif", to / f"{name}.previous.sif"
    if not previous.is_symlink():
        raise DwfError(f"no previous {name} image to roll back to", to)
    old_current, old_previous = os.readlink(current), os.readlink(previous)
    _relink(current, old_previous)
    _relink(previous, old_current)
    return to / old_previous


SECTIONS = {"arguments", "setup", "files", "post", "environment", "runscript", "startscript", "test", "labels",
            "help", "app"}
HEADER_KEYS = {"bootstrap", "osversion", "mirrorurl", "from", "include", "stage", "fingerprints"}


def parse_definition(path: str | Path) -> dict:
    """Check a definition file without building it (apptainer has no dry-run parse).

    Returns ``{"header": {...}, "sections": {name: text}, "arguments": {...}}``. Raises
    :class:`DwfError` naming the file for an unknown header key or section, a missing
    ``Bootstrap``, or a ``{{ build arg }}`` with no default in ``%arguments``.
    """
    import re

    path = Path(path)
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if current is None and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("%"):
            name = stripped[1:].split()[0].lower()
            if name not in SECTIONS:
                raise DwfError(f"line {number}: unknown section %{name}", path)
            current = name
            sections.setdefault(name, [])
            continue
        if current is None:
            key, sep, value = stripped.partition(":")
            if not sep or key.strip().lower() not in HEADER_KEYS:
                raise DwfError(f"line {number}: not a header keyword: {stripped!r}", path)
            header[key.strip().lower()] = value.strip()
        else:
            sections[current].append(line)
    if "bootstrap" not in header:
        raise DwfError("no Bootstrap: header", path)
    arguments = {}
    for line in sections.get("arguments", []):
        if "=" in line:
            k, _, v = line.strip().partition("=")
            arguments[k.strip()] = v.strip()
    used = set(re.findall(r"{{\s*([A-Za-z_][A-Za-z0-9_]*)\s*}}", path.read_text()))
    missing = sorted(used - set(arguments))
    if missing:
        raise DwfError(f"build argument(s) {', '.join(missing)} used but given no default in %arguments", path)
    return {"header": header, "sections": {k: "\n".join(v) for k, v in sections.items()}, "arguments": arguments}
