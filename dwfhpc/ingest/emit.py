"""``dwfhpc ingest --emit-scripts DIR``: specs and scheduler scripts for manual submission, nothing submitted.

Each verified part in the inbox gets ``DIR/<stem>.json`` (its task spec) and
``DIR/<stem>.sbatch`` (or ``.pbs``) from ``slurm_templates/`` / ``pbs_templates/``: the same
``dwfhpc node run SPEC --index I`` that ingest's arrays run. The inbox is left as it is.

A part that cannot be used (a symlink, FIFO, device or folder under a part's name, a manifest or
tarball that fails its check, a file that cannot be read) is skipped with one line naming it and
why; nothing in one part stops the others.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..config import SiteSettings
from ..errors import DwfError
from ..layout import tar_for_manifest
from ..node import TaskSpec
from ..parts import verify_part
from ..scheduler import job_name, scheduler_for
from ..templates import write_array_script


def emit_scripts(site: SiteSettings, out_dir: Path, kind: str = "slurm") -> list[Path]:
    out_dir = Path(out_dir)
    sched = scheduler_for(kind, site.scheduler)
    inbox = site.path(site.ingest.inbox)
    written = []
    for manifest_path in sorted(inbox.glob("*.manifest.json")) if inbox.is_dir() else []:
        tar = tar_for_manifest(manifest_path)
        stem = manifest_path.name[: -len(".manifest.json")]
        try:
            for f in (manifest_path, tar):  # never follow a link or open a FIFO
                if not stat.S_ISREG(os.lstat(f).st_mode):
                    raise DwfError("not a regular file (a symlink, folder, FIFO or device)", f)
            manifest = verify_part(tar, manifest_path)
            spec = TaskSpec.from_site(site, manifest_path, tar, manifest=manifest,
                                      require_masters=site.node.require_masters and manifest.kind == "science")
            spec_path = spec.write(out_dir / f"{stem}.json")
        except (DwfError, OSError) as exc:
            print(f"skipped: {exc}")
            continue
        written.append(write_array_script(site, kind, spec_path, len(spec.ccds),
                                          job_name(manifest.expid, f"p{manifest.part}"),
                                          out_dir / f"{stem}{sched.script_suffix}", out_dir / "logs"))
    return written
