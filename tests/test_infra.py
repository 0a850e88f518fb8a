"""The test infrastructure itself: a real Slurm runs arrays, a real sshd carries rsync."""

import subprocess
import time

import operator

import pytest
import submitit


@pytest.mark.slurm
def test_submitit_array_of_four_on_real_slurm(slurm_cluster, tmp_path):
    executor = submitit.SlurmExecutor(folder=tmp_path / "%j")  # never %A_%a: it breaks after submission
    executor.update_parameters(time=5, mem="200M", cpus_per_task=1, array_parallelism=4, partition="main")
    # the function must be importable on the node: a stdlib one, not this test module's
    jobs = executor.map_array(operator.mul, [1, 2, 3, 4], [1, 2, 3, 4])
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1  # one array
    deadline = time.monotonic() + 120
    while not all(j.done() for j in jobs):
        assert time.monotonic() < deadline, "array did not finish in 120 s"
        time.sleep(0.5)
    assert [j.result() for j in jobs] == [1, 4, 9, 16]


@pytest.mark.slurm
def test_cancelled_task_leaves_the_queue(slurm_cluster):
    """Without slurmdbd the only sign of a killed task is that squeue no longer lists it."""
    out = slurm_cluster.run("sbatch", "--parsable", "--array=0-1", "--wrap", "sleep 300", "-o", "/dev/null").stdout
    job = out.strip().split(";")[0]
    slurm_cluster.run("scancel", f"{job}_1")
    deadline = time.monotonic() + 30
    while True:
        listed = slurm_cluster.run("squeue", "-h", "-r", "-j", job, "-o", "%i").stdout.split()
        if f"{job}_1" not in listed:
            break
        assert time.monotonic() < deadline
        time.sleep(0.3)
    slurm_cluster.run("scancel", job)
    assert slurm_cluster.run("sacct", "-j", job, check=False).returncode != 0  # no accounting here


@pytest.mark.slurm
def test_slurm_queue_says_why_a_task_is_held(slurm_cluster):
    """The collector's one squeue per poll carries Slurm's reason (``%r``): a held task says so."""
    from dwfhpc.config import SchedulerSettings
    from dwfhpc.scheduler import scheduler_for
    from dwfhpc.states import QueueEntry, SchedulerState

    out = slurm_cluster.run("sbatch", "--parsable", "--hold", "--array=0-1", "--wrap", "true", "-o", "/dev/null")
    job = out.stdout.strip().split(";")[0]
    try:
        slurm = scheduler_for("slurm", SchedulerSettings())
        deadline = time.monotonic() + 30
        while True:
            states = slurm.queue([f"{job}_0", f"{job}_1", "999999_0"])
            if len(states) == 2 and all(s.reason for s in states.values()):
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.3)
        assert set(states) == {f"{job}_0", f"{job}_1"}  # an unknown task is simply not queued
        assert all(s == QueueEntry(SchedulerState.PENDING, "JobHeldUser") for s in states.values())
    finally:
        slurm_cluster.run("scancel", job, check=False)


@pytest.mark.ssh
def test_rsync_over_real_sshd_checks_host_keys(sshd_server, tmp_path):
    src = tmp_path / "part.tar"
    src.write_bytes(b"x" * 100_000)
    dest = tmp_path / "inbox"
    dest.mkdir()
    ssh = " ".join(sshd_server.ssh_command())
    subprocess.run(["rsync", "-a", "-e", ssh, str(src), f"{sshd_server.alias}:{dest}/"], check=True, timeout=60)
    assert (dest / "part.tar").read_bytes() == src.read_bytes()
    # a wrong host key in known_hosts must make the transfer fail, not prompt or proceed
    good = sshd_server.known_hosts.read_text()
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
        other = (tmp_path / "other.pub").read_text().split()
        sshd_server.known_hosts.write_text(f"[{sshd_server.host}]:{sshd_server.port} {other[0]} {other[1]}\n")
        bad = subprocess.run(["rsync", "-a", "-e", ssh, str(src), f"{sshd_server.alias}:{dest}/again.tar"],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and "HOST IDENTIFICATION HAS CHANGED" in bad.stderr
    finally:
        sshd_server.known_hosts.write_text(good)


@pytest.mark.slurm
def test_accounting_cluster_reports_cancelled_tasks(slurm_cluster_dbd):
    """With slurmdbd + MariaDB, sacct knows what squeue forgets: the killed task's final state."""
    out = slurm_cluster_dbd.run("sbatch", "--parsable", "--wrap", "sleep 300", "-o", "/dev/null").stdout
    job = out.strip().split(";")[0]
    slurm_cluster_dbd.run("scancel", job)
    deadline = time.monotonic() + 60
    while True:
        states = slurm_cluster_dbd.run("sacct", "-n", "-X", "-j", job, "-o", "State", check=False).stdout.split()
        if states and states[0].startswith("CANCELLED"):
            break
        assert time.monotonic() < deadline, f"sacct said {states}"
        time.sleep(0.5)
