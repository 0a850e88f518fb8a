"""The warm workers' settings in one file: ``<queue root>/settings.json`` (:class:`dwfhpc.workers.WorkerSettings`).

Ingest's pool executor writes it before it submits workers; each worker reads its scratch, stop margin and
idle limit from it (arguments still override it, the config's defaults apply when neither is there), so
neither submitit's arguments nor the PBS template carry them.
"""

from __future__ import annotations

import json

import pytest

from dwfhpc.errors import DwfError
from dwfhpc.ingest.executors.base import WorkerRequest
from dwfhpc.ingest.executors.workers import WorkerPoolExecutor
from dwfhpc.layout import WorkerQueueFiles
from dwfhpc.workers import WorkerSettings
from dwfhpc.workers.worker import Worker
from fakes import FakeExecutor
from test_ingest import site_for


def test_the_settings_file_is_settings_json_in_the_queue_and_round_trips(tmp_path):
    root = tmp_path / "q"
    assert WorkerQueueFiles(root).settings == root / "settings.json" == WorkerSettings.path(root)
    assert WorkerSettings.read(root) is None  # absent: None, not an error
    settings = WorkerSettings(scratch_vars=["PBS_JOBFS", "TMPDIR"], scratch_fallback="/scratch/fb", stop_minutes=2.5,
                              max_idle=30.0)
    assert settings.write(root) == root / "settings.json"
    assert WorkerSettings.read(root) == settings
    assert json.loads((root / "settings.json").read_text())["scratch_vars"] == ["PBS_JOBFS", "TMPDIR"]
    assert not [p for p in root.iterdir() if p.name != "settings.json"]  # no temporary file left beside it
    WorkerSettings(scratch_vars=[], scratch_fallback="/tmp", stop_minutes=3).write(root)  # replaced whole
    assert WorkerSettings.read(root) == WorkerSettings([], "/tmp", 3.0, None)


@pytest.mark.parametrize("text", [
    "{not json",
    "[]",
    '{"scratch_vars": "TMPDIR", "scratch_fallback": "/tmp", "stop_minutes": 3}',
    '{"scratch_vars": [], "scratch_fallback": "", "stop_minutes": 3}',
    '{"scratch_vars": [], "scratch_fallback": "/tmp"}',
    '{"scratch_vars": [], "scratch_fallback": "/tmp", "stop_minutes": "3"}',
    '{"scratch_vars": [], "scratch_fallback": "/tmp", "stop_minutes": 3, "max_idle": -1}',
    '{"scratch_vars": [], "scratch_fallback": "/tmp", "stop_minutes": 3, "scratch_var": ["TMPDIR"]}',
])
def test_a_malformed_settings_file_is_an_error_naming_it(tmp_path, text):
    path = tmp_path / "settings.json"
    path.write_text(text)
    with pytest.raises(DwfError) as err:
        WorkerSettings.read(tmp_path)
    assert str(path) in str(err.value) and err.value.path == str(path)
    with pytest.raises(DwfError, match="settings.json"):  # a worker on that queue says so, it does not guess
        Worker(tmp_path, name="w-bad")


def test_a_worker_without_scratch_flags_uses_the_files_scratch_and_stop_margin(tmp_path, monkeypatch):
    root, jobfs = tmp_path / "q", tmp_path / "jobfs"
    jobfs.mkdir()
    monkeypatch.setenv("DWF_TEST_SETTINGS_JOBFS", str(jobfs))
    monkeypatch.delenv("NO_SUCH_SCRATCH_VAR", raising=False)
    WorkerSettings(scratch_vars=["NO_SUCH_SCRATCH_VAR", "DWF_TEST_SETTINGS_JOBFS"],
                   scratch_fallback=str(tmp_path / "fallback"), stop_minutes=2.0).write(root)
    worker = Worker(root, name="w-file")
    assert worker.scratch == jobfs and worker.stop_margin == 120.0 and worker.max_idle is None
    # none of the file's variables set: its fallback
    monkeypatch.delenv("DWF_TEST_SETTINGS_JOBFS")
    assert Worker(root, name="w-fallback").scratch == tmp_path / "fallback"
    # explicit arguments (the CLI's flags, worker_main's arguments) still win over the file
    worker = Worker(root, name="w-told", scratch_vars=[], scratch_fallback=str(tmp_path / "told"), stop_margin=5.0)
    assert worker.scratch == tmp_path / "told" and worker.stop_margin == 5.0


def test_without_a_settings_file_the_config_defaults_apply(tmp_path):
    worker = Worker(tmp_path / "q", name="w-defaults", scratch_fallback=str(tmp_path / "fb"))
    assert worker.stop_margin == 180.0  # ingest.worker_stop_minutes's default, as `dwfhpc node worker`'s was
    assert WorkerSettings.defaults().scratch_vars == ["JOBFS", "SLURM_TMPDIR", "TMPDIR"]


def test_the_files_max_idle_ends_an_idle_worker(tmp_path):
    root = tmp_path / "q"
    WorkerSettings(scratch_vars=[], scratch_fallback=str(tmp_path / "fb"), stop_minutes=3, max_idle=0.2).write(root)
    summary = Worker(root, name="w-idle", idle_poll=0.05).run()
    assert summary.tasks == 0 and summary.reason == "idle for 0.2 s"


def test_the_pool_executor_writes_the_settings_before_it_submits_workers(tmp_path):
    root = tmp_path / "q"
    seen = []

    class Recording(FakeExecutor):
        def submit_workers(self, request):
            seen.append(WorkerSettings.read(request.queue_root))  # what the workers will find when they start
            return super().submit_workers(request)

    inner = Recording()
    pool = WorkerPoolExecutor(inner, root, n=2, mem_gb=1.0, time_minutes=60, replace_minutes=10, stop_minutes=3,
                              scratch_vars=["PBS_JOBFS"], scratch_fallback=str(tmp_path / "fb"))
    assert WorkerSettings.read(root) is None  # nothing until workers are started
    pool._start(2)
    expected = WorkerSettings(scratch_vars=["PBS_JOBFS"], scratch_fallback=str(tmp_path / "fb"), stop_minutes=3.0)
    assert seen == [expected] and WorkerSettings.read(root) == expected
    (root / "settings.json").unlink()
    pool._start(1)  # each start writes it again (a successor after the file was lost, a restarted ingest)
    assert seen[-1] == expected and len(inner.submitted) == 2


def test_submitit_workers_get_only_the_queue_and_their_walltime(tmp_path):
    from dwfhpc.ingest.executors.submitit_common import submit_worker_array
    from dwfhpc.workers.worker import worker_main

    class Stub:
        def map_array(self, fn, *iterables):
            self.call = (fn, iterables)
            return []

    stub = Stub()
    submit_worker_array(stub, WorkerRequest(name="dwf-workers", queue_root=tmp_path / "q", n=2, mem_gb=1,
                                            time_minutes=60, stop_minutes=3, scratch_vars=["PBS_JOBFS"],
                                            scratch_fallback="/fb"))
    assert stub.call == (worker_main, ([str(tmp_path / "q")] * 2, [60] * 2))


def test_the_pbs_worker_script_passes_no_scratch_or_stop_flags(tmp_path):
    from dwfhpc.ingest.executors.pbs import PbsArrayExecutor
    from dwfhpc.scheduler import scheduler_for
    from dwfhpc.templates import worker_script

    site = site_for(tmp_path, "pbs", scheduler={"queue": "normal"})
    ex = PbsArrayExecutor(site, tmp_path / "jobs")
    text = ex.worker_script_for(WorkerRequest(name="dwf-workers", queue_root=tmp_path / "q", n=2, mem_gb=8,
                                              time_minutes=720, stop_minutes=3, scratch_vars=["PBS_JOBFS"],
                                              scratch_fallback="/fb")).read_text()
    assert f" node worker {tmp_path / 'q'} --time-minutes 720\n" in text
    assert "--scratch-var" not in text and "--scratch-fallback" not in text and "--stop-seconds" not in text
    # a manual script (dwfhpc.templates.worker_script) may still give the stop margin as a flag
    res = scheduler_for("pbs", site.scheduler).resources(mem_gb=1, time_minutes=10)
    manual = worker_script(site, "pbs", tmp_path / "q", 1, "dwf-workers", tmp_path / "logs", resources=res,
                           stop_seconds=60)
    assert " --time-minutes 10 --stop-seconds 60\n" in manual and "--scratch-var" not in manual
