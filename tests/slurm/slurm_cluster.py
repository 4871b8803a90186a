"""A real single-node SLURM cluster (munged, slurmctld, slurmd), started once per session.

Needs the Debian packages slurmctld, slurmd, slurm-client and munge (``make
slurm-deps`` installs them: every binary in ``REQUIRED``) and root (slurmd runs as
root). Where they are missing the tests skip and say why, except in CI (the
environment variable ``CI`` is ``true``), where they fail: a CI run must not pass
without its SLURM tests. The daemons run from their own state directory with their
own config and munge socket, and are stopped by pid at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "scancel", "squeue")
# Every binary the fixture runs; the Makefile's slurm-deps target checks the same list.
REQUIRED = (*DAEMONS, "mungekey")
PREFIX = "selfsup-slurm-"

SLURM_CONF = """\
ClusterName=selfsuptest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
# cred_expire=5: a requeued job may start again after 6 s instead of 121 s.
AuthInfo=socket={d}/munge/munge.sock,cred_expire=5
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
# pgid: a job's stray processes die with it.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={d}/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=1
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# Asking for more CPUs than exist fails at once instead of pending forever.
EnforcePartLimits=ALL
NodeName={host} {hardware} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed: {proc.stderr}")
        return proc

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (kept for MinJobAge = 300 s after the end)."""
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out.splitlines()[0]))

    def wait(self, job_id: str, timeout: float = 600) -> dict[str, str]:
        """Wait for a job (every task of an array) to end; its last record."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.run("squeue", "-h", "-j", job_id, check=False).stdout.strip():
                return self.job(job_id)
            time.sleep(0.5)
        self.run("scancel", job_id, check=False)
        raise AssertionError(f"job {job_id} did not end in {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted((self.root / "log").glob("*"))
        )


def _missing() -> str | None:
    absent = [d for d in REQUIRED if shutil.which(d) is None]
    if absent:
        return (
            f"SLURM is not installed ({', '.join(absent)} missing): "
            "make slurm-deps (apt-get install slurmctld slurmd slurm-client munge)"
        )
    if os.geteuid() != 0:
        return "slurmd needs root to start a test cluster"
    return None


def _stop_strays() -> None:
    """Daemons left by an earlier, killed test session (their state dir has our prefix)."""
    out = subprocess.run(["pgrep", "-af", PREFIX], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, _, cmd = line.partition(" ")
        if any(d in cmd for d in ("munged", "slurmctld", "slurmd")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def _stop(root: Path) -> None:
    pids = []
    for pidfile in (root / "slurmd.pid", root / "slurmctld.pid", root / "munge" / "munged.pid"):
        try:
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pass
    for pid in pids:
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):  # it may end just now
                os.kill(pid, signal.SIGKILL)


def running_cluster() -> Iterator[Cluster]:
    """Start the cluster, yield it, stop it (the body of a session fixture)."""
    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the SLURM tests cannot run: {reason}", pytrace=False)
        pytest.skip(reason)
    _stop_strays()
    # munged needs o+x on every directory above its socket: not pytest's 0700 tmp dirs.
    root = Path(tempfile.mkdtemp(prefix=PREFIX, dir="/tmp"))
    for sub in ("state", "spool", "log", "munge"):
        (root / sub).mkdir()
    os.chmod(root, 0o755)
    os.chmod(root / "munge", 0o755)
    host = socket.gethostname().split(".")[0]
    hardware = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout
    hardware = re.sub(r"^NodeName=\S+ | UpTime=.*$", "", hardware.splitlines()[0])
    (root / "slurm.conf").write_text(SLURM_CONF.format(host=host, d=root, hardware=hardware))
    munge = root / "munge"
    subprocess.run(["mungekey", "-c", "-k", str(munge / "munge.key")], check=True)
    subprocess.run(["munged", f"--socket={munge}/munge.sock", f"--key-file={munge}/munge.key",
                    f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                    f"--seed-file={munge}/munged.seed"], check=True)  # fmt: skip
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    cluster = Cluster(root, env)
    try:
        # munged first, then the controller, then the node daemon; both daemonise.
        subprocess.run(["slurmctld", "-f", str(root / "slurm.conf")], env=env, check=True)
        subprocess.run(["slurmd", "-f", str(root / "slurm.conf")], env=env, check=True)
        for _ in range(300):
            state = cluster.run("sinfo", "-h", "-n", host, "-o", "%t", check=False).stdout.strip()
            if state == "idle":
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the test cluster did not become idle:\n{cluster.logs()}")
        yield cluster
    finally:
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True)
        _stop(root)
        shutil.rmtree(root, ignore_errors=True)
