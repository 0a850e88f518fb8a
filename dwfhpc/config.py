"""Site and instrument configuration: YAML in, validated settings out.

A site file describes where things live and how jobs run (``configs/local.yaml``,
``ctio.yaml``, ``ozstar.yaml``, ``g2.yaml``); an instrument file describes a camera
(``decam.yaml``, ``hsc.yaml``). Loading validates every key: an unknown key, a wrong type or
a missing required value is a :class:`~dwfhpc.errors.ConfigError` naming the file, the key and
what was expected. Relative paths in a site file are resolved against its ``workdir``.

The files shipped in ``configs/`` are also package data, so ``load_site("local")`` works from
any folder.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from .config_load import Strict, _read_yaml, _read_yaml_keys, _validate
from .errors import ConfigError

# the allowed values of settings, for the command line's choices and the node's checks (typing.get_args)
Codec = Literal["auto", "passthrough", "jp2", "jp2-lossless", "rice", "rice-q", "none"]  # auto: passthrough if the raw allows, else rice
PushMode = Literal["serial", "parallel", "batch", "end-of-night"]
Executor = Literal["local", "slurm", "pbs"]
Backend = Literal["embedded", "photpipe", "hscpipe"]
InstrumentName = Literal["decam", "hsc"]




# --------------------------------------------------------------------------- instrument
class InstrumentSettings(Strict):
    """A camera: ``configs/decam.yaml``, ``configs/hsc.yaml``."""

    name: InstrumentName
    pixel_scale: float = Field(gt=0, description="arcsec per pixel")
    longitude: float = Field(ge=-180, le=180, description="site longitude, degrees east (west negative)")
    latitude: float = Field(ge=-90, le=90)
    bad_ccds: list[int] = Field(default_factory=list, description="CCDs never processed")
    saturation_default: float | None = Field(None, description="ADU, when the header has none")
    read_noise_default: float | None = Field(None, description="electrons, when the header has none")
    bpm_dir: str | None = Field(None, description="bad-pixel box lists (ECSV), one per CCD")
    filters: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- telescope side
def _streams_value(v: Any) -> int | str:
    """``push.streams``: a number of streams, 1-64, or ``auto`` (one message, not one per union member)."""
    if v == "auto":
        return v
    try:
        n = int(v) if not isinstance(v, bool) and str(v).strip().lstrip("+-").isdigit() else None
    except (TypeError, ValueError):
        n = None
    if n is None or not 1 <= n <= 64:
        raise ValueError(f"must be a number of streams from 1 to 64, or auto (got {v!r})")
    return n


class PushSettings(Strict):
    """The telescope side: ``dwfhpc push``."""

    raw_dir: str = "raw"
    outgoing_dir: str = Field("outgoing", description="where parts are packed before sending")
    journal: str = Field("push-journal.sqlite", description="sender journal (SQLite)")
    codec: Codec = Field("auto", description="auto: the raw's own lossless tiles (passthrough) when it has them, else rice")
    ratio: float = Field(10.0, gt=1, description="jp2 target compression ratio")
    qlevel: float = Field(4.0, gt=0, description="rice-q quantisation level")
    parts: int = Field(4, ge=1, description="parts per exposure")
    streams: Annotated[int | Literal["auto"], BeforeValidator(_streams_value)] = Field(4, description="parallel transfer streams; auto: as many as "
                                           "fill transport.link_mbit at transport.rtt_ms (one ssh stream carries "
                                           "at most 2 MiB per round trip), and at least as many parts")
    jobs: int | None = Field(None, ge=1, description="compression processes (default: all cores)")
    mode: PushMode = "parallel"
    nbundle: int = Field(4, ge=1)
    exp_min: int = Field(0, ge=0, description="end-of-night: ignore exposures at or below this number")
    poll_seconds: float = Field(2.0, gt=0)
    stable_seconds: float = Field(2.0, ge=0, description="size must be stable this long")
    incomplete_timeout: float = Field(600.0, gt=0, description="give up on a file still incomplete after this")
    keep_sent_parts: bool = Field(False, description="keep part tarballs after confirmed delivery")
    patterns: list[str] = Field(default_factory=lambda: ["DECam_*.fits.fz", "c4d_*_ori.fits.fz", "HSCA*.fits"])
    visit_quiet_seconds: float = Field(30.0, gt=0, description="HSC: a visit with fewer CCD files than expected "
                                       "is sent once no new file of it has appeared for this long")


class TransportSettings(Strict):
    """How parts reach the cluster: rsync to a local folder or over ssh."""

    kind: Literal["local", "ssh"] = "local"
    host: str | None = None
    user: str | None = None
    port: int = Field(22, ge=1, le=65535)
    key: str | None = Field(None, description="ssh private key")
    known_hosts: str | None = Field(None, description="known_hosts file; host keys are always checked")
    ssh_options: list[str] = Field(default_factory=list, description="extra '-o' options, e.g. Ciphers=...")
    control_persist: int = Field(600, ge=0, description="seconds an idle ControlMaster stays up")
    staging: str = Field("staging", description="partial/staging folder on the receiver")
    inbox: str = Field("inbox", description="inbox folder on the receiver")
    retries: int = Field(6, ge=0)
    backoff_seconds: float = Field(2.0, gt=0)
    backoff_max: float = Field(120.0, gt=0)
    timeout_seconds: int = Field(120, ge=1, description="rsync --timeout")
    bwlimit_kbps: int | None = Field(None, ge=1)
    link_mbit: float | None = Field(None, gt=0, description="the telescope-to-cluster link's capacity, Mbit/s "
                                    "(push.streams: auto)")
    rtt_ms: float | None = Field(None, gt=0, description="the link's round-trip time, ms (push.streams: auto)")
    batch_parts: int = Field(8, ge=1, description="most parts one rsync call carries: a stream takes its share "
                             "of the parts queued (queued / idle streams) in one call; 1 = one part per call")
    pipeline_moves: bool = Field(True, description="a stream moves a batch staging -> inbox while the next "
                                 "batch's rsync runs (the move no longer waits on the wire)")
    stream: bool = Field(False, description="ssh only: each stream keeps one `dwfhpc receive` running on the "
                         "receiver and feeds it part after part (no rsync handshake or remote move per call); "
                         "needs dwfhpc on the receiver")
    receiver_command: str = Field("dwfhpc", description="how the receiver's shell runs dwfhpc with transport.stream "
                                  "(e.g. '/opt/dwf/bin/dwfhpc' or 'apptainer exec /images/dwf.sif dwfhpc')")
    delivered_dirs: list[str] = Field(default_factory=list, description="receiver folders that also count as "
                                      "delivered in end-of-night mode (e.g. where ingest moves verified parts); "
                                      "the inbox always counts")

    @field_validator("ssh_options")
    @classmethod
    def _no_disabled_host_keys(cls, v: list[str]) -> list[str]:
        bad = [opt for opt in v if opt.replace(" ", "").replace("=", "").lower()
               in ("stricthostkeycheckingno", "stricthostkeycheckingoff", "userknownhostsfile/dev/null")]
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))} switch{'es' if len(bad) == 1 else ''} host-key "
                             "checking off; record the host key in known_hosts instead")
        return v

    def checks(self) -> list[tuple[str, str]]:
        out = []
        if self.kind == "ssh":
            if not self.host:
                out.append(("host", "required when kind is ssh"))
            if not self.known_hosts:
                out.append(("known_hosts", "required when kind is ssh: host keys are always checked"))
            if self.staging.startswith("/") and not self.inbox.startswith("/"):
                out.append(("inbox", f"must be an absolute path when staging is (got {self.inbox!r})"))
        if self.backoff_max < self.backoff_seconds:
            out.append(("backoff_max", f"must be at least backoff_seconds ({self.backoff_seconds:g}) "
                                       f"(got {self.backoff_max:g})"))
        return out


# --------------------------------------------------------------------------- cluster side
class SchedulerSettings(Strict):
    """Resources and submission details for Slurm or PBS arrays."""

    partition: str | None = None
    account: str | None = None
    reservation: str | None = None
    qos: str | None = None
    queue: str | None = Field(None, description="PBS queue")
    time_minutes: int = Field(20, ge=1)
    mem_gb: float = Field(4.0, gt=0)
    cpus_per_task: int = Field(1, ge=1)
    tmp_gb: float | None = Field(None, gt=0, description="node-local scratch to request")
    array_parallelism: int = Field(64, ge=1)
    max_array_size: int | None = Field(None, ge=1, description="override MaxArraySize read from the cluster")
    setup: list[str] = Field(default_factory=list, description="shell lines run before the task (module load ...)")
    pbs_array_syntax: Literal["J", "t"] = Field("J", description="PBS Pro -J or Torque -t")
    extra: dict[str, str] = Field(default_factory=dict, description="additional scheduler parameters")


class IngestSettings(Strict):
    """The cluster side: ``dwfhpc ingest``."""

    inbox: str = "inbox"
    quarantine: str = "quarantine"
    parts_store: str = Field("parts", description="verified parts are moved here")
    state_db: str = "state.sqlite"
    specs: str = Field("specs", description="task spec JSON files")
    jobs_dir: str = Field("jobs", description="submitit folders and scheduler logs")
    executor: Executor = "local"
    poll_seconds: float = Field(5.0, gt=0, description="seconds between scheduler polls (one status query each)")
    inbox_poll_seconds: float = Field(0.25, gt=0, description="seconds between inbox scans (a directory listing; "
                                      "a verified part is submitted at once, without waiting for the scheduler poll)")
    verify_threads: int = Field(1, ge=1, description="parts verified (sha256) at once in one inbox scan; more pays "
                                "only with spare cores or slow shared storage")
    max_jobs: int | None = Field(None, ge=1)
    rate: float | None = Field(None, gt=0, description="parts per minute")
    max_attempts: int = Field(3, ge=1)
    retry_delay_seconds: float = Field(15.0, ge=0, description="a failed or lost CCD waits this long before its "
                                       "next attempt, doubling each time (a full scratch or a node hiccup gets "
                                       "time to clear instead of using the attempts up in seconds); 0: at once")
    lost_after_seconds: float = Field(30.0, gt=0, description="a task gone from the queue without a result this long is lost")
    report_every_seconds: float = Field(60.0, gt=0, description="regenerate the night report this often")
    report_dir: str = Field("reports", description="night reports (report/night-<night>.html)")
    arrival_grace_seconds: float = Field(120.0, gt=0, description="a manifest whose tarball is still missing or "
                                         "short after this is quarantined")
    auto_masters: bool = Field(True, description="build a night's masters once its bias/flat tasks are done; "
                               "that night's science waits for them")
    workers: int = Field(0, ge=0, description="warm workers: N long-lived tasks that run CCD after CCD "
                         "(0: one array per part)")
    worker_time_minutes: int = Field(720, ge=5, description="walltime of each worker task")
    worker_replace_minutes: float = Field(10.0, gt=0, description="start a worker's successor this long before "
                                          "its walltime ends (rolling: never zero workers)")
    worker_stop_minutes: float = Field(3.0, gt=0, description="a worker takes no new CCD this close to its "
                                       "walltime (must be less than worker_replace_minutes)")
    worker_mem_gb: float | None = Field(None, gt=0, description="memory per worker (default: scheduler.mem_gb)")
    max_resubmits_per_exposure: int = Field(200, ge=0, description="retries of one exposure's CCDs after which "
                                            "none of them is resubmitted again (runaway guard)")
    max_resubmits_per_night: int = Field(2000, ge=0, description="retries in one night after which nothing of "
                                         "that night is resubmitted (runaway guard)")
    max_resource_retries: int = Field(5, ge=0, description="retries of a CCD after failures on a node's own "
                                      "resources (scratch missing, too small or full; ENOSPC / EIO in it), which "
                                      "do not use up its max_attempts; past this many they count as attempts")
    node_failures_exclude: int = Field(3, ge=0, description="a node with this many resource failures within "
                                       "node_failure_window_minutes is excluded from new submissions (Slurm arrays "
                                       "and workers; its warm workers drain) until the window has passed; 0: never")
    node_failure_window_minutes: float = Field(30.0, gt=0, description="the window over which a node's resource "
                                               "failures are counted, and how long its exclusion lasts after them")

    def checks(self) -> list[tuple[str, str]]:
        if self.workers and self.worker_stop_minutes >= self.worker_replace_minutes:
            return [("worker_stop_minutes", f"must be less than worker_replace_minutes "
                                            f"({self.worker_replace_minutes:g}) so a successor runs before a worker stops")]
        return []


class NodeSettings(Strict):
    """What a task does on a compute node (``dwfhpc node run``)."""

    scratch_vars: list[str] = Field(default_factory=lambda: ["JOBFS", "SLURM_TMPDIR", "TMPDIR"],
                                    description="environment variables naming node-local scratch, first set wins")
    scratch_fallback: str = "/tmp"
    min_free_gb: float = Field(1.0, ge=0, description="refuse to start with less scratch than this")
    scratch_factor: float = Field(2.0, gt=0, description="scratch needed: member + this x the decompressed CCD")
    require_masters: bool = Field(True, description="fail a science CCD without master bias/flat (false: overscan only)")
    backend: Backend = "embedded"
    container: bool = Field(False, description="run the calibration step inside the image")
    image: str | None = Field(None, description="Apptainer image used by container/backends")
    binds: list[str] = Field(default_factory=list, description="extra apptainer --bind entries (src[:dest[:ro]])")
    apptainer: str = Field("apptainer", description="the apptainer (or singularity) executable")
    photpipe_command: list[str] = Field(
        default_factory=lambda: ["pipeloop.pl", "-red", "{ut}", "{ccd}", "-id", "{expnum}", "-redobad"],
        description="placeholders: {ut} (ut<YYMMDD> of the night), {ccd} (2 digits), {expnum}")
    photpipe_root: str | None = Field(None, description="photpipe config/data folder on the shared FS (bound read-only)")
    photpipe_outputs: dict[str, str] = Field(
        default_factory=lambda: {"cal": "workspace/{ut}/{ccd}/{stem}.sw.fits",
                                 "mask": "workspace/{ut}/{ccd}/{stem}.sw.mask.fits"},
        description="photpipe results under its per-task data root (cal required, mask optional)")
    photpipe_env: dict[str, str] = Field(default_factory=lambda: {"PIPE_DATA": "{root}"},
                                         description="environment for photpipe; {root} is the per-task data root")
    hscpipe_repo: str | None = Field(None, description="butler repo whose CALIB and ref_cats the task repo links")
    hscpipe_rerun: str = "dwf"
    hscpipe_config: str | None = Field(None, description="processCcd config file (default: the shipped processCcd_dwf.py)")
    hscpipe_ingest: list[str] = Field(default_factory=lambda: ["ingestImages.py", "{repo}", "{raw}", "--mode=link"])
    hscpipe_command: list[str] = Field(
        default_factory=lambda: ["processCcd.py", "{repo}", "--rerun", "{rerun}", "--id", "visit={visit}",
                                 "ccd={ccd}", "--configfile", "{config}"])
    hscpipe_outputs: dict[str, str] = Field(
        default_factory=lambda: {"cal": "rerun/{rerun}/**/corr/CORR-{visit:07d}-{ccd:03d}.fits"},
        description="processCcd results under the task repo (glob; image HDU 1, mask HDU 2)")


class CalibrationSettings(Strict):
    """Embedded calibrator and QA."""

    products: str = "products"
    library: str = Field("calibs", description="calibration library (night / CCD / filter)")
    masters: str = Field("masters", description="master bias and flats")
    refcat: str | None = Field(None, description="reference catalog (FITS table with ra, dec, mag)")
    bpm_dir: str | None = None
    to_electrons: bool = False
    rice_qlevel: float = Field(4.0, gt=0)
    wcs_match_radius_arcsec: float = Field(3.0, gt=0)
    wcs_min_matches: int = Field(5, ge=1)
    masters_max_age_days: int = Field(
        7, ge=0, description="while tonight's masters are not built (or could not be), science calibrates with the "
                             "newest earlier night's masters at most this many days old (never a later night's); "
                             "0: never fall back, science waits for tonight's")


class ImageSettings(Strict):
    """Apptainer images: where they are built and deployed."""

    build_dir: str = "images"
    deploy_dir: str | None = None
    build_args: dict[str, str] = Field(default_factory=dict)
    fakeroot: bool | None = Field(None, description="default: when not privileged")


class SiteSettings(Strict):
    """A site: where everything lives and how jobs run."""

    name: str
    description: str = ""
    workdir: str = Field(".", description="base for relative paths in this file")
    instrument: InstrumentName = "decam"
    push: PushSettings = Field(default_factory=PushSettings)
    transport: TransportSettings = Field(default_factory=TransportSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    node: NodeSettings = Field(default_factory=NodeSettings)
    calibration: CalibrationSettings = Field(default_factory=CalibrationSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)

    source: str | None = Field(None, exclude=True, description="the file this was loaded from")

    def checks(self) -> list[tuple[str, str]]:
        if self.push.streams == "auto" and self.transport.kind == "ssh" and not (
                self.transport.link_mbit and self.transport.rtt_ms):
            return [("push.streams", "auto needs transport.link_mbit and transport.rtt_ms (the link it should fill)")]
        return []

    def path(self, value: str | os.PathLike[str] | None) -> Path | None:
        """Resolve a path from this config: ``~`` and ``$VARS`` expanded, relative to ``workdir``."""
        if value is None:
            return None
        p = Path(os.path.expandvars(os.path.expanduser(str(value))))
        if p.is_absolute():
            return p
        return (self.base / p).resolve()

    def with_changes(self, section: str, changes: dict[str, Any]) -> SiteSettings:
        """A copy with ``changes`` in one section (``site.with_changes("ingest", {"workers": 4})``), for
        library callers that hold a loaded site; the command line goes through :func:`load_site`'s overrides."""
        if not changes:
            return self
        settings = getattr(self, section)
        unknown = sorted(set(changes) - set(type(settings).model_fields))
        if unknown:
            raise TypeError(f"unknown {section} setting(s): {', '.join(unknown)}")
        return self.model_copy(update={section: settings.model_copy(update=dict(changes))})

    @property
    def base(self) -> Path:
        w = Path(os.path.expandvars(os.path.expanduser(self.workdir)))
        if not w.is_absolute():
            w = Path.cwd() / w
        return w.resolve()


# --------------------------------------------------------------------------- loading
def shipped_configs() -> Path:
    """The folder of configs shipped with the package (``configs/`` in the repository)."""
    return Path(str(resources.files("dwfhpc") / "configs"))


def _locate(name_or_path: str | os.PathLike[str]) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists() or os.sep in str(name_or_path):
        if not p.exists():
            raise ConfigError("no such configuration file", p)
        return p
    shipped = shipped_configs() / f"{name_or_path}.yaml"
    if not shipped.exists():
        known = ", ".join(sorted(x.stem for x in shipped_configs().glob("*.yaml")))
        raise ConfigError(f"no configuration named {str(name_or_path)!r} (shipped: {known})")
    return shipped




def load_site(name_or_path: str | os.PathLike[str], *, workdir: str | os.PathLike[str] | None = None,
              overrides: dict[str, Any] | None = None) -> SiteSettings:
    """Load and validate a site config by shipped name (``local``) or path.

    ``workdir`` replaces the file's ``workdir``; ``overrides`` is a nested mapping applied
    on top of the file (used by command-line flags).
    """
    path = _locate(name_or_path)
    data, lines, duplicates = _read_yaml_keys(path)
    if overrides:
        data = _deep_merge(data, overrides)
    if workdir is not None:
        data["workdir"] = str(workdir)
    site = _validate(SiteSettings, data, path, lines, duplicates)
    site.source = str(path)
    return site


def load_instrument(name_or_path: str | os.PathLike[str]) -> InstrumentSettings:
    """Load and validate an instrument config by shipped name (``decam``) or path."""
    path = _locate(name_or_path)
    data, lines, duplicates = _read_yaml_keys(path)
    return _validate(InstrumentSettings, data, path, lines, duplicates)


def load_any(path: str | os.PathLike[str]) -> BaseModel:
    """Validate a file as an instrument config when it says ``pixel_scale``, else as a site config."""
    p = _locate(path)
    data = _read_yaml(p)
    return load_instrument(p) if "pixel_scale" in data else load_site(p)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out
