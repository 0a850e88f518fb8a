"""A full hscPipe reduction of one HSC visit as a job array (the seed's ``dwf_hsc_triggerfullred``).

One array task per CCD of the visit in the state DB, rendered from
``slurm_templates/full-reduction.sbatch`` (or ``pbs_templates/full-reduction.pbs``) and submitted
with ``sbatch`` (``qsub``). Each task stages its raw CCD out of its verified part into node-local
scratch (``python -m dwfhpc.ops.fullred stage``, on the host), builds a private butler repository
there whose ``CALIB`` and ``ref_cats`` link ``node.hscpipe_repo``, runs ``node.hscpipe_ingest`` and
``node.hscpipe_command`` through ``apptainer exec`` in the hscpipe image, and copies the whole rerun
(calexp, catalogs, ...; not just dwfhpc's four products) to
``<products>/<night>/<expid>/hscpipe-<rerun>/ccd-<CCD>``, through a temporary name.

The image is ``<images.deploy_dir>/hscpipe.sif`` (where ``dwfhpc image deploy hscpipe`` puts it),
else ``node.image`` when ``node.backend`` is hscpipe, else ``--image``. Resources come from the
site's scheduler settings. The submission is recorded as an event in the state DB.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import atomic_write_text
from ..backends.apptainer import bind_spec, exec_argv
from ..backends.hscpipe import default_config
from ..config import SchedulerSettings, SiteSettings
from ..errors import DwfError
from ..instruments import instrument_for
from ..layout import JobFiles, under
from ..node.stage import stage_ccd
from ..parts import read_manifest
from ..scheduler import SCHEDULERS, CommandNotFound, Scheduler, job_name, scheduler_for
from ..statedb import StateDB
from ..states import PartState
from ..templates import render
from .lookup import match_exposure

# Values only known on the node, as tokens in argv elements; the script turns them into shell variables.
_SCRATCH, _RAW, _CCD = "/@DWF_SCRATCH@", "@DWF_RAW@", "@DWF_CCD@"
_TOKENS = {_SCRATCH: "scratch", _RAW: "raw", _CCD: "ccd"}
_TOKEN_RE = re.compile("(" + "|".join(re.escape(t) for t in _TOKENS) + ")")


@dataclass
class FullReduction:
    """One visit's full-reduction array: what it runs on, and (once submitted) its job id."""

    visit: int
    expid: str
    night: str
    filter: str
    ccds: list[int]
    tars: list[str]
    manifests: list[str]
    scheduler: str
    rerun: str
    image: str
    shared_repo: str
    processccd_config: str
    out_dir: str
    log_dir: str
    job_name: str
    script: str | None = None
    job_id: str | None = None
    text: str = field(default="", repr=False)
    #: the site's scheduler settings (a Torque site's array syntax, queue, ...) for every later call
    settings: SchedulerSettings | None = field(default=None, repr=False, compare=False)

    def as_dict(self, with_text: bool = False) -> dict:
        d = asdict(self)
        d.pop("settings")
        if not with_text:
            d.pop("text")
        return d

    def scheduler_of_site(self) -> Scheduler:
        """The scheduler this reduction was planned for, with the site's settings (PBS Pro ``-J`` or Torque ``-t``)."""
        return scheduler_for(self.scheduler, self.settings)


# --------------------------------------------------------------------------- finding the visit
def hsc_visits(db: StateDB) -> dict[int, str]:
    """HSC visits in the state DB: visit number -> expid."""
    return {p.expnum: p.expid for p in db.parts() if p.instrument == "hsc" and p.state != PartState.QUARANTINED}


def find_visit(db: StateDB, wanted: str) -> tuple[int, str]:
    """A visit by number (``903334``) or expid (``HSC_0903334``)."""
    visits = hsc_visits(db)
    found = match_exposure(wanted, visits.items(), expid=lambda v: v[1], number=lambda v: v[0])
    if found is not None:
        return found
    known = ", ".join(str(v) for v in sorted(visits)) or "none"
    raise DwfError(f"no HSC visit {wanted} in the state DB (visits: {known})", db.path)


# --------------------------------------------------------------------------- settings
def hscpipe_image(site: SiteSettings, override: str | None = None) -> str:
    if override:
        return str(site.path(override))
    if site.images.deploy_dir:
        return str(site.path(site.images.deploy_dir) / "hscpipe.sif")
    if site.node.backend == "hscpipe" and site.node.image:
        return str(site.path(site.node.image))
    raise DwfError("no hscpipe image: set images.deploy_dir (where `dwfhpc image deploy hscpipe` puts hscpipe.sif), "
                   "or node.image with node.backend hscpipe, or give --image", site.source)


def _scratch_root(site: SiteSettings) -> str:
    """``${JOBFS:-${SLURM_TMPDIR:-...:-/tmp}}`` from node.scratch_vars and node.scratch_fallback."""
    fallback = site.node.scratch_fallback
    if any(c in fallback for c in '"$`\\}'):
        raise DwfError(f"node.scratch_fallback {fallback!r}: a path with \" $ ` \\ or }} cannot go into a script")
    expr = fallback
    for var in reversed(site.node.scratch_vars):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
            raise DwfError(f"node.scratch_vars: {var!r} is not an environment variable name")
        expr = f"${{{var}:-{expr}}}"
    return expr


def shell_words(argv: list[str]) -> str:
    """argv as shell words: literal text quoted, node-side tokens as double-quoted variables."""
    words = []
    for arg in argv:
        pieces = [f'"${{{_TOKENS[p]}}}"' if p in _TOKENS else shlex.quote(p)
                  for p in _TOKEN_RE.split(str(arg)) if p]
        words.append("".join(pieces) or "''")
    return " ".join(words)


def _command(templates: list[str], values: dict, what: str) -> list[str]:
    out = []
    for t in templates:
        try:
            out.append(t.format(**values))
        except (KeyError, IndexError, ValueError) as exc:
            raise DwfError(f"node.{what} {t!r}: {exc!r} (placeholders: {', '.join(sorted(values))}; repo, raw, ccd "
                           "and config are only known on the node and take no format)") from None
    return out


# --------------------------------------------------------------------------- the array
def plan(site: SiteSettings, db: StateDB, visit: str, *, scheduler: str | None = None, rerun: str | None = None,
         processccd_config: str | None = None, image: str | None = None, time_minutes: int | None = None,
         mem_gb: float | None = None) -> FullReduction:
    """Find the visit's CCDs and parts and render the array script (nothing written or submitted)."""
    kind = scheduler or ("pbs" if site.ingest.executor == "pbs" else "slurm")
    if kind not in SCHEDULERS:
        raise DwfError(f"no full-reduction template for scheduler {kind!r} (slurm, pbs)")
    number, expid = find_visit(db, str(visit))
    tasks = sorted(db.tasks(expid=expid), key=lambda t: t.ccd)
    if not tasks:
        raise DwfError(f"HSC visit {number} has no CCD tasks in the state DB", db.path)
    parts = {t.part: db.part(t.part) for t in tasks}
    for t in tasks:
        tar = Path(parts[t.part].tar)
        if not tar.is_file():
            raise DwfError(f"part tarball of visit {number} CCD {t.ccd} is missing", tar)
    first = parts[tasks[0].part]
    node = site.node
    if not node.hscpipe_repo:
        raise DwfError("a full hscpipe reduction needs node.hscpipe_repo (the butler repo whose CALIB and ref_cats "
                       "each task links)", site.source)
    shared = site.path(node.hscpipe_repo)
    if not shared.is_dir():
        raise DwfError("node.hscpipe_repo is not a folder", shared)
    config = Path(site.path(processccd_config) if processccd_config else
                  site.path(node.hscpipe_config) if node.hscpipe_config else default_config())
    if not config.is_file():
        raise DwfError("processCcd config file does not exist", config)
    rerun = rerun or f"{node.hscpipe_rerun}-full"
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", rerun):
        raise DwfError(f"rerun name {rerun!r}: use letters, digits, '.', '_' and '-'")
    sif = hscpipe_image(site, image)
    values = {"repo": f"{_SCRATCH}/repo", "raw": _RAW, "ccd": _CCD, "config": f"{_SCRATCH}/{config.name}",
              "rerun": rerun, "visit": number, "filter": first.filter or "", "night": first.night}
    binds = [_SCRATCH, bind_spec(shared, read_only=True), *node.binds]

    def in_image(templates: list[str], what: str) -> str:
        argv = exec_argv(sif, _command(templates, values, what), binds=binds, pwd=_SCRATCH, apptainer=node.apptainer)
        return shell_words(argv)

    products = site.path(site.calibration.products)
    out_dir = under(products, ("night", first.night), ("expid", expid), ("rerun", f"hscpipe-{rerun}"))
    log_dir = JobFiles.for_site(site).fullred
    red = FullReduction(
        visit=number, expid=expid, night=first.night, filter=first.filter or "", ccds=[t.ccd for t in tasks],
        tars=[str(Path(parts[t.part].tar)) for t in tasks],
        manifests=[str(Path(parts[t.part].manifest)) for t in tasks],
        scheduler=kind, rerun=rerun, image=sif, shared_repo=str(shared), processccd_config=str(config),
        out_dir=str(out_dir), log_dir=str(log_dir),
        job_name=job_name("fullred", number), settings=site.scheduler)
    sched = red.scheduler_of_site()
    res = sched.resources(mem_gb=mem_gb, time_minutes=time_minutes)
    red.text = render(
        kind, f"full-reduction{sched.script_suffix}",
        directives=sched.directives(res, job_name=red.job_name, ntasks=len(red.ccds), log_dir=red.log_dir),
        visit=number, expid=expid, rerun=rerun, setup=res.setup, ccds=red.ccds, tars=red.tars, manifests=red.manifests,
        python=shlex.quote(sys.executable), scratch_root=_scratch_root(site), shared_repo=str(shared),
        config=str(config), config_name=config.name, out_dir=red.out_dir,
        ingest_command=in_image(node.hscpipe_ingest, "hscpipe_ingest"),
        process_command=in_image(node.hscpipe_command, "hscpipe_command"))
    return red


def write_script(red: FullReduction, path: str | os.PathLike[str]) -> Path:
    """Write the script (and make its log folder, which the scheduler will not create)."""
    Path(red.log_dir).mkdir(parents=True, exist_ok=True)
    out = atomic_write_text(path, red.text)
    out.chmod(0o755)
    red.script = str(out)
    return out


def default_script_path(site: SiteSettings, red: FullReduction) -> Path:
    suffix = red.scheduler_of_site().script_suffix
    return JobFiles.for_site(site).fullred / f"{red.expid}.{red.rerun}{suffix}"


def submit(red: FullReduction, script: Path, scheduler: Scheduler | None = None) -> str:
    """Submit the script (``sbatch --parsable`` / ``qsub``, through :mod:`dwfhpc.scheduler`); returns the job id."""
    try:
        red.job_id = (scheduler or red.scheduler_of_site()).submit(script)
    except CommandNotFound as exc:
        raise CommandNotFound(f"{exc} (--emit FILE writes the script without submitting)") from None
    return red.job_id


def record(db: StateDB, red: FullReduction) -> None:
    db.event("info", f"{red.expid}: full hscpipe reduction of {len(red.ccds)} CCDs (rerun {red.rerun}) submitted as "
                     f"{red.scheduler} job {red.job_id}; script {red.script}; output {red.out_dir}")


# --------------------------------------------------------------------------- on the node
def stage_raw(tar: str | os.PathLike[str], manifest: str | os.PathLike[str], ccd: int,
              dest: str | os.PathLike[str]) -> Path:
    """Extract, verify and decompress one CCD into ``dest`` under its raw HSC name (what ingestImages reads)."""
    dest = Path(dest)
    m = read_manifest(manifest)
    if m.instrument != "hsc":
        raise DwfError(f"not an HSC part ({m.instrument})", manifest)
    staged = stage_ccd(tar, m, ccd, dest)
    final = dest / instrument_for("hsc").raw_ccd_filename(m.expnum, ccd)
    os.replace(staged.raw, final)
    shutil.rmtree(dest / "member", ignore_errors=True)
    return final


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dwfhpc.ops.fullred", description="node side of dwfhpc fullred")
    s = p.add_subparsers(dest="action", required=True)
    st = s.add_parser("stage", help="stage one raw CCD from its part into DEST; prints its path")
    st.add_argument("tar", type=Path)
    st.add_argument("manifest", type=Path)
    st.add_argument("ccd", type=int)
    st.add_argument("dest", type=Path)
    args = p.parse_args(argv)
    try:
        print(stage_raw(args.tar, args.manifest, args.ccd, args.dest))
    except DwfError as exc:
        print(f"dwfhpc fullred stage: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover - run by the array script
    sys.exit(_main())
