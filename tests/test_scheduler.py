"""dwfhpc.scheduler without a cluster: directives from resources (Slurm, PBS Pro -J, Torque -t), the
parsing of squeue / qstat / sacct / scontrol output through a fake call (tests/fakes.py), and the
errors a user sees on a machine that is not a Slurm cluster."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from dwfhpc.cli import main
from dwfhpc.config import SchedulerSettings, load_site
from dwfhpc.errors import DwfError
from dwfhpc.ingest.executors.base import ArrayRequest
from dwfhpc.ingest.executors.pbs import PbsArrayExecutor
from dwfhpc.ingest.executors.slurm import SlurmArrayExecutor
from dwfhpc.scheduler import JOB_PREFIX, Pbs, Resources, Slurm, Torque, job_name, run, scheduler_for
from dwfhpc.states import QueueEntry, SchedulerState
from fakes import FakeCall, fake_scheduler

SITE = dict(partition="main", account="p025", qos="high", reservation="dwf-night", queue="workq", time_minutes=90,
            mem_gb=3, cpus_per_task=2, tmp_gb=2, array_parallelism=8, extra={"constraint": "avx2"},
            setup=["module load python"])

SQUEUE = """\
4242_0|dwf-DECam_00000031-p1|RUNNING|None
4242_1|dwf-DECam_00000031-p1|PENDING|JobHeldUser
4242_2|dwf-DECam_00000031-p1|PENDING|Resources
77|someone-else|RUNNING|None
"""

QSTAT = """\
Job id            Name             User              Time Use S Queue
----------------  ---------------- ----------------  -------- - -----
123[].pbs01       dwf-DECam_0000*  dwf                      0 B workq
123[0].pbs01      dwf-DECam_0000*  dwf               00:00:02 R workq
123[1].pbs01      dwf-DECam_0000*  dwf                      0 Q workq
124.pbs01         other            bob                      0 H workq
"""

QSTAT_XF = """\
Job Id: 123[0].pbs01
    Job_Name = dwf-DECam_00000031-p1
    job_state = F
    comment = Job run at Thu Dec 04 at 10:01 on (n1:ncpus=1:mem=4194304kb) and fin
\tished
    Exit_status = -29

Job Id: 123[1].pbs01
    job_state = F
    comment = Job run at Thu Dec 04 at 10:01 and finished
    Exit_status = 271

Job Id: 123[2].pbs01
    job_state = F
    comment = job killed: mem 5242880kb exceeded limit 4194304kb
    Exit_status = 265

Job Id: 123[3].pbs01
    job_state = F
    comment = Job run at Thu Dec 04 at 10:01 and finished
    Exit_status = 0
"""


def settings(**over) -> SchedulerSettings:
    return SchedulerSettings(**{**SITE, **over})


# --------------------------------------------------------------------------- directives from resources
def test_slurm_directives_from_the_site_resources():
    slurm = Slurm(settings())
    lines = slurm.directive_lines(slurm.resources(), job_name="dwf-X-p1", ntasks=5, log_dir="/logs")
    assert lines == [
        "#SBATCH --job-name=dwf-X-p1", "#SBATCH --array=0-4%8", "#SBATCH --time=01:30:00", "#SBATCH --mem=3072M",
        "#SBATCH --cpus-per-task=2", "#SBATCH --ntasks=1", "#SBATCH --partition=main", "#SBATCH --account=p025",
        "#SBATCH --qos=high", "#SBATCH --reservation=dwf-night", "#SBATCH --tmp=2048M",
        "#SBATCH --output=/logs/%x-%A_%a.out", "#SBATCH --signal=B:USR2@60", "#SBATCH --constraint=avx2"]


def test_one_attempts_memory_and_time_replace_the_sites_and_one_task_is_no_array():
    slurm = Slurm(settings())
    res = slurm.resources(mem_gb=6, time_minutes=45)
    assert (res.mem_gb, res.time_minutes, res.cpus) == (6, 45, 2)
    assert slurm.settings.mem_gb == 3 and slurm.settings.time_minutes == 90  # the site is left as it was
    text = slurm.directives(res, job_name="dwf-X-p1", ntasks=1, log_dir="/l")
    assert "--array" not in text and "#SBATCH --mem=6144M" in text and "#SBATCH --time=00:45:00" in text
    assert Slurm(settings(array_parallelism=1)).directive_lines(
        Resources(array_parallelism=None), job_name="j", ntasks=3, log_dir="/l")[1] == "#SBATCH --array=0-2"


def test_pbs_pro_directives_use_J_and_one_select_chunk():
    pbs = scheduler_for("pbs", settings(pbs_array_syntax="J"))
    assert type(pbs) is Pbs
    lines = pbs.directive_lines(pbs.resources(), job_name="dwf-X-p1", ntasks=5, log_dir="/logs")
    assert lines == ["#PBS -N dwf-X-p1", "#PBS -J 0-4", "#PBS -l walltime=01:30:00",
                     "#PBS -l select=1:ncpus=2:mem=3072mb:jobfs=2048mb", "#PBS -q workq", "#PBS -A p025", "#PBS -j oe",
                     "#PBS -o /logs/", "#PBS -l constraint=avx2"]


def test_torque_directives_use_t_with_a_limit_and_nodes_ppn():
    pbs = scheduler_for("pbs", settings(pbs_array_syntax="t"))
    assert type(pbs) is Torque
    lines = pbs.directive_lines(pbs.resources(mem_gb=8), job_name="dwf-X-p1", ntasks=5, log_dir="/logs")
    assert lines == ["#PBS -N dwf-X-p1", "#PBS -t 0-4%8", "#PBS -l walltime=01:30:00", "#PBS -l nodes=1:ppn=2",
                     "#PBS -l mem=8192mb", "#PBS -q workq", "#PBS -A p025", "#PBS -j oe", "#PBS -o /logs/",
                     "#PBS -l constraint=avx2"]
    assert not any(re.search(r"-[Jt] ", line) for line in pbs.directive_lines(pbs.resources(), job_name="x",
                                                                             log_dir="/l"))


def test_multi_node_jobs_ask_for_one_task_per_node():
    res = Resources(time_minutes=15, mem_gb=None, cpus=None, nodes=4, signal_delay_s=None)
    assert Slurm().directive_lines(res, job_name="j", log_dir="/l", log_name="%x-%j.out") == [
        "#SBATCH --job-name=j", "#SBATCH --time=00:15:00", "#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1",
        "#SBATCH --output=/l/%x-%j.out"]
    assert "#PBS -l select=4:ncpus=1" in Pbs().directives(res, job_name="j", log_dir="/l")
    assert "#PBS -l nodes=4:ppn=1" in Torque().directives(res, job_name="j", log_dir="/l")


def test_submitit_gets_the_same_resources_as_the_sbatch_script():
    slurm = Slurm(settings())
    params = slurm.submitit_parameters(slurm.resources(mem_gb=6), job_name="dwf-X-p1")
    assert params == dict(job_name="dwf-X-p1", time=90, mem="6144MB", cpus_per_task=2, array_parallelism=8,
                          setup=["module load python"], signal_delay_s=60, partition="main", account="p025",
                          qos="high", additional_parameters={"constraint": "avx2", "reservation": "dwf-night",
                                                             "tmp": "2048M"})


def test_the_job_name_prefix_is_defined_once():
    assert JOB_PREFIX == "dwf-" and job_name("DECam_00000031", "p1") == "dwf-DECam_00000031-p1"
    assert job_name("fullred", 903334) == "dwf-fullred-903334"


# --------------------------------------------------------------------------- queries through the fake call
def _states(entries: dict[str, QueueEntry]) -> dict[str, SchedulerState]:
    """The state of each entry (an entry is a :class:`QueueEntry`, never a bare word)."""
    assert all(isinstance(e, QueueEntry) for e in entries.values()), entries
    return {k: e.state for k, e in entries.items()}


def test_one_squeue_for_many_ids_returns_their_states():
    slurm, fake = fake_scheduler("slurm")
    fake.on("squeue", stdout=SQUEUE)
    states = slurm.queue(["4242_0", "4242_1", "4242_9"], user="dwf")
    assert _states(states) == {"4242_0": "RUNNING", "4242_1": "PENDING"}  # 4242_9 left the queue
    assert fake.calls == [["squeue", "-h", "-r", "-u", "dwf", "-o", "%i|%j|%T|%r"]] and slurm.queries == 1
    assert slurm.queue([]) == {} and len(fake.calls) == 1  # nothing to ask: no query


def test_queued_tasks_by_prefix_tell_held_from_pending():
    slurm, fake = fake_scheduler("slurm")
    fake.on("squeue", stdout=SQUEUE)
    tasks = slurm.tasks(prefix=JOB_PREFIX)
    assert [t.job_id for t in tasks] == ["4242_0", "4242_1", "4242_2"]
    assert [t.display_state for t in tasks] == ["RUNNING", "HELD", "PENDING"]
    assert "-u" not in fake.calls[0]  # `dwfhpc jobs` looks at every user's dwf- jobs


def test_qstat_table_states_are_matched_without_the_server_suffix():
    pbs, fake = fake_scheduler("pbs")
    fake.on("qstat", "-t", stdout=QSTAT)
    ids = pbs.array_task_ids("123[].pbs01", 3)
    assert ids == ["123[0].pbs01", "123[1].pbs01", "123[2].pbs01"]
    assert _states(pbs.queue(ids)) == {"123[0].pbs01": "RUNNING", "123[1].pbs01": "PENDING"}
    assert _states(pbs.queue(["124"])) == {"124": "HELD"}
    assert fake.calls[0] == ["qstat", "-t"]
    assert pbs.array_task_ids("125.pbs01", 1) == ["125.pbs01"]


def test_sacct_says_why_tasks_ended_in_one_call():
    slurm, fake = fake_scheduler("slurm")
    fake.on("sacct", stdout="4242_0|TIMEOUT\n4242_1|CANCELLED by 0\n4242_2|COMPLETED\n4242_3|OUT_OF_MEMORY\n"
                            "999_0|TIMEOUT\n")
    reasons = slurm.gone_reasons(["4242_0", "4242_1", "4242_2", "4242_3"])
    assert reasons == {"4242_0": "timeout", "4242_1": "cancelled", "4242_3": "oom"}
    assert fake.calls == [["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", "4242_0,4242_1,4242_2,4242_3"]]


def test_without_accounting_sacct_is_asked_once_then_left_alone():
    slurm, fake = fake_scheduler("slurm")
    fake.on("sacct", returncode=1, stderr="sacct: error: Slurm accounting storage is disabled")
    assert slurm.gone_reasons(["1_0"]) == {} and slurm.gone_reasons(["1_1"]) == {}
    assert fake.commands() == ["sacct"]
    no_sacct, fake = fake_scheduler("slurm")  # sacct not installed at all
    assert no_sacct.gone_reasons(["1_0"]) == {} and no_sacct.gone_reasons(["1_0"]) == {}
    assert fake.commands() == ["sacct"]


def test_qstat_x_says_why_pbs_pro_tasks_ended_and_torque_is_not_asked():
    pbs, fake = fake_scheduler("pbs", pbs_array_syntax="J")
    fake.on("qstat", "-x", stdout=QSTAT_XF)
    ids = [f"123[{i}].pbs01" for i in range(5)]
    assert pbs.gone_reasons(ids) == {"123[0].pbs01": "timeout", "123[1].pbs01": "killed by signal 15",
                                     "123[2].pbs01": "oom"}
    assert fake.calls == [["qstat", "-x", "-f", *ids]]
    torque, fake = fake_scheduler("pbs", pbs_array_syntax="t")
    assert torque.gone_reasons(ids) == {} and fake.calls == []


def test_max_array_size_from_scontrol_unless_the_config_says():
    slurm, fake = fake_scheduler("slurm")
    fake.on("scontrol", "show", "config", stdout="Configuration data as of ...\nMaxArraySize            = 1001\n"
                                                 "MaxJobCount             = 10000\n")
    assert slurm.max_array_size() == 1001 and slurm.max_array_size() == 1001
    assert fake.calls == [["scontrol", "show", "config"]]  # asked once
    configured, fake = fake_scheduler("slurm", max_array_size=50)
    assert configured.max_array_size() == 50 and fake.calls == []
    failing, fake = fake_scheduler("slurm")
    fake.on("scontrol", returncode=1, stderr="slurm_load_ctl_conf error")
    assert failing.max_array_size() is None


def test_submit_parses_the_job_id_and_a_refusal_names_command_and_stderr(tmp_path):
    script = tmp_path / "a.sbatch"
    slurm, fake = fake_scheduler("slurm")
    fake.on("sbatch", stdout="4242;cluster\n")
    assert slurm.submit(script) == "4242" and fake.calls == [["sbatch", "--parsable", str(script)]]
    assert fake.timeouts == [120.0]
    pbs, fake = fake_scheduler("pbs")
    fake.on("qsub", stdout="123[].pbs01\n")
    assert pbs.submit(script) == "123[].pbs01" and fake.calls == [["qsub", str(script)]]
    refused, fake = fake_scheduler("slurm")
    fake.on("sbatch", returncode=1, stderr="sbatch: error: Batch job submission failed: Invalid partition name\n")
    with pytest.raises(DwfError, match="sbatch refused a.sbatch: sbatch: error: .*Invalid partition name") as exc:
        refused.submit(script)
    assert exc.value.path == str(script)


def test_cancel_is_one_call_for_all_ids():
    slurm, fake = fake_scheduler("slurm")
    fake.on("scancel")
    slurm.cancel(["4242_0", "4242_1"])
    slurm.cancel([])
    assert fake.calls == [["scancel", "4242_0", "4242_1"]]
    pbs, fake = fake_scheduler("pbs")
    fake.on("qdel", returncode=35, stderr="qdel: Unknown Job Id 9.pbs01")
    with pytest.raises(DwfError, match=r"qdel failed \(exit 35\): qdel: Unknown Job Id 9.pbs01"):
        pbs.cancel(["9.pbs01"])


def test_a_failing_or_hanging_query_is_an_error_naming_the_command():
    slurm, fake = fake_scheduler("slurm")
    fake.on("squeue", returncode=1, stderr="slurm_load_jobs error: Unable to contact slurm controller\n")
    with pytest.raises(DwfError, match="squeue failed .*Unable to contact slurm controller"):
        slurm.queue(["1_0"])
    hung, fake = fake_scheduler("pbs")
    fake.on("qstat", hangs=True)
    with pytest.raises(DwfError, match=r"`qstat -t` did not answer within 60 s"):
        hung.queue(["1"])


# --------------------------------------------------------------------------- not a Slurm cluster
def test_not_a_slurm_cluster_is_one_clear_error():
    slurm, fake = fake_scheduler("slurm")  # no command answers: nothing installed
    with pytest.raises(DwfError, match=r"^squeue not found: is this a Slurm cluster \(and SLURM_CONF set\)\?$"):
        slurm.queue(["1_0"])
    with pytest.raises(DwfError, match=r"^qsub not found: is this a PBS cluster\?"):
        fake_scheduler("pbs")[0].submit("x.pbs")


def test_not_a_slurm_cluster_through_the_real_call_and_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue, sbatch, scontrol on PATH
    with pytest.raises(DwfError, match=r"squeue not found: is this a Slurm cluster \(and SLURM_CONF set\)\?"):
        Slurm().tasks()
    assert main(["jobs"]) == 2
    assert "squeue not found: is this a Slurm cluster (and SLURM_CONF set)?" in capsys.readouterr().err


def test_no_controller_or_a_wrong_slurm_conf_is_refused_before_submitting(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "nope.conf"))
    with pytest.raises(DwfError, match="SLURM_CONF names a file that does not exist"):
        fake_scheduler("slurm")[0].check()
    monkeypatch.delenv("SLURM_CONF")
    slurm, fake = fake_scheduler("slurm")
    fake.on("scontrol", "ping", returncode=1, stdout="Slurmctld(primary) at ctl is DOWN\n")
    with pytest.raises(DwfError, match="no Slurm controller answers `scontrol ping`: Slurmctld.* is DOWN"):
        slurm.check()
    fake.on("scontrol", "ping", stdout="Slurmctld(primary) at ctl is UP\n")
    slurm.check()


# --------------------------------------------------------------------------- the executors on the layer
def test_slurm_executor_queries_once_per_poll_and_passes_attempt_resources(tmp_path):
    fake = FakeCall().on("scontrol", "ping", stdout="Slurmctld(primary) at ctl is UP\n") \
                     .on("scontrol", "show", "config", stdout="MaxArraySize = 7\n").on("squeue", stdout=SQUEUE)
    ex = SlurmArrayExecutor(tmp_path, settings(), slurm=Slurm(settings(), call=fake))
    assert ex.max_array_size() == 7
    request = ArrayRequest(part="p", name="dwf-X-p1", spec=tmp_path / "s.json", ntasks=3, mem_gb=12, time_minutes=40)
    params = ex.parameters(request)
    assert (params["mem"], params["time"], params["job_name"]) == ("12288MB", 40, "dwf-X-p1")
    assert _states(ex.queue(["4242_0", "4242_2"])) == {"4242_0": "RUNNING", "4242_2": "PENDING"} and ex.queries == 1
    assert fake.commands() == ["scontrol", "scontrol", "squeue"]


def test_pbs_executor_writes_the_attempts_resources_without_copying_the_site(tmp_path):
    site = load_site("g2", workdir=tmp_path)
    before = site.scheduler.model_dump()
    pbs, fake = fake_scheduler("pbs", site.scheduler)
    fake.on("qsub", stdout="77[].g2\n").on("qstat", "-t", stdout="77[1].g2  dwf-x  dwf  0 R gstar\n")
    ex = PbsArrayExecutor(site, tmp_path / "jobs", pbs=pbs)
    request = ArrayRequest(part="p", name="dwf-X-p1", spec=tmp_path / "s.json", ntasks=2, mem_gb=8, time_minutes=60)
    sub = ex.submit(request)
    script = Path(fake.calls[0][1])
    text = script.read_text()
    assert "#PBS -l mem=8192mb" in text and "#PBS -l walltime=01:00:00" in text and "#PBS -t 0-1%64" in text
    assert site.scheduler.model_dump() == before
    assert sub.job_id == "77[].g2" and sub.task_ids == ["77[0].g2", "77[1].g2"]
    assert _states(ex.queue(sub.task_ids)) == {"77[1].g2": "RUNNING"}
    subprocess.run(["bash", "-n", str(script)], check=True)


# --------------------------------------------------------------------------- the one call site
def test_run_takes_an_argv_list_keeps_stderr_and_times_out():
    proc = run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
    with pytest.raises(TypeError, match="argv lists, not shell strings"):
        run("squeue -h")
    with pytest.raises(subprocess.TimeoutExpired):
        run(["sleep", "5"], timeout=0.2)
    with pytest.raises(FileNotFoundError):
        run(["dwfhpc-no-such-command"])


def test_scheduler_commands_are_run_only_inside_dwfhpc_scheduler():
    """No argv naming a scheduler command outside dwfhpc/scheduler/ (docstrings and messages may name them)."""
    package = Path(__file__).resolve().parents[1] / "dwfhpc"
    argv = re.compile(r"""\[\s*["'](squeue|sbatch|qsub|sacct|scontrol|qstat|scancel|qdel)["']""")
    offenders = [f"{p.relative_to(package)}:{n}" for p in package.rglob("*.py") if "scheduler" not in p.parts
                 for n, line in enumerate(p.read_text().splitlines(), 1) if argv.search(line)]
    assert offenders == []
    assert argv.search('["squeue", "-h"]')  # the pattern does find an argv


def test_one_site_scheduler_follows_the_site():
    """``site_scheduler``: the one place a site's batch system is chosen (g2: Torque's -t arrays; ozstar, local:
    Slurm), with the site's own settings."""
    from dwfhpc.config import load_site
    from dwfhpc.scheduler import Pbs, Slurm, Torque, site_scheduler

    g2 = site_scheduler(load_site("g2"))
    assert type(g2) is Torque and g2.settings.queue == "gstar"
    pro = site_scheduler(load_site("g2", overrides={"scheduler": {"pbs_array_syntax": "J"}}))
    assert type(pro) is Pbs
    assert type(site_scheduler(load_site("ozstar"))) is Slurm and type(site_scheduler(load_site("local"))) is Slurm
    assert type(site_scheduler(None)) is Slurm
