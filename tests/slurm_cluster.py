"""A real single-node Slurm cluster for the tests, started and stopped by PID.

Follows ``shared/reference/slurm_single_node.md``: Debian's Slurm 22.05 and
munge run as plain background processes (no systemd), with the settings that
make a requeued job start again within seconds instead of minutes
(``AuthInfo=cred_expire=5``, ``sched_interval=2``, ``bf_interval=2``) and
``MinJobAge=4`` so ``sbatch --wait`` polls every 2 s.  The node declares more
CPUs than the machine has (``SlurmdParameters=config_overrides``) so several
MPI ranks fit on a 2-core box.

The daemons are stopped through their PID files only, never by name, after
every job has been cancelled (stopping slurmd does not kill running jobs).
Everything here is global machine state (``/etc/slurm``, ``/run``), so only
one cluster may run at a time; :func:`SlurmCluster.start` first stops
leftovers of a previous run that are recorded in our PID files.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from faust_hpc.run.claim import pid_alive

log = logging.getLogger(__name__)

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "libpmix-dev")
CTLD_PID = Path("/run/slurmctld.pid")
SLURMD_PID = Path("/run/slurmd.pid")
MUNGED_PID = Path("/run/munge/munged.pid")
SLURM_CONF = Path("/etc/slurm/slurm.conf")
# Slurm dlopens the unversioned libpmix.so for `srun --mpi=pmix`; only libpmix-dev ships it.
PMIX_SO_GLOB = "/usr/lib/*/pmix2/lib/libpmix.so"


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed or started here; the message says why (a skip reason)."""


def _run(cmd: list[str], check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, timeout=timeout, text=True,
                          capture_output=True, **kw)


def _installed() -> bool:
    import glob
    tools = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "munged", "munge")
    paths = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return all(shutil.which(t, path=paths) for t in tools) and bool(glob.glob(PMIX_SO_GLOB))


def ensure_installed() -> None:
    """Install Debian's Slurm + munge with apt-get if they are missing.

    Raises :class:`SlurmUnavailable` (the tests' skip reason) when the packages
    are absent and cannot be installed (not root, no apt-get, no network).
    """
    if _installed():
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable("Slurm is not installed and installing it needs root "
                               f"(apt-get install {' '.join(PACKAGES)})")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable("Slurm is not installed and there is no apt-get to install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log.info("installing %s with apt-get", " ".join(PACKAGES))
    update = _run(["apt-get", "update", "-q"], check=False, timeout=600, env=env)
    install = _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
                   check=False, timeout=900, env=env)
    if install.returncode != 0 or not _installed():
        tail = (install.stderr or update.stderr or "").strip().splitlines()[-3:]
        raise SlurmUnavailable("could not install the Slurm packages with apt-get: "
                               + " | ".join(tail))




def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class SlurmCluster:
    """One node, one partition ``debug``; ``ncpus`` may exceed the real core count."""

    def __init__(self, ncpus: int = 8, partition: str = "debug") -> None:
        self.ncpus = ncpus
        self.partition = partition
        self.host = socket.gethostname().split(".")[0]  # slurmd registers with the short name
        self.started = False

    # ---------------------------------------------------------------- set-up
    def write_config(self) -> None:
        key = Path("/etc/munge/munge.key")
        if not key.exists() or key.stat().st_size == 0:
            made = _run(["mungekey", "--create", f"--keyfile={key}"], check=False)
            if made.returncode != 0:
                key.write_bytes(os.urandom(1024))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
        for d, mode in ((Path("/run/munge"), 0o755), (Path("/var/log/munge"), 0o700),
                        (Path("/var/lib/munge"), 0o700)):
            d.mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "munge", "munge")
            d.chmod(mode)
        for d in (Path("/var/spool/slurmctld"), Path("/var/spool/slurmd"), Path("/var/log/slurm")):
            d.mkdir(parents=True, exist_ok=True)
        for spool in (Path("/var/spool/slurmctld"), Path("/var/spool/slurmd")):
            for child in spool.iterdir():  # fresh state: job ids restart at 1
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(f"""\
ClusterName=faustci
SlurmctldHost={self.host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=cred_expire=5
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile={CTLD_PID}
SlurmdPidFile={SLURMD_PID}
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
# the defaults (60 s / 30 s) leave a requeued job pending for up to a minute
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
JobRequeue=1
KillWait=5
# sbatch --wait polls every 2 s when MinJobAge/2 <= its interval
MinJobAge=4
InactiveLimit=0
MailProg=/bin/true
NodeName={self.host} CPUs={self.ncpus} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def start(self) -> None:
        """Start munged, slurmctld and slurmd (each forks and writes its PID file)."""
        ensure_installed()
        self.stop()  # leftovers of an earlier run, found only through our PID files
        self.write_config()
        _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"])
        if not _wait_for(self._munge_ok, 10):
            raise SlurmUnavailable("munged did not start (munge -n | unmunge fails)")
        _run(["/usr/sbin/slurmctld"])
        if not _wait_for(lambda: "is UP" in _run(["scontrol", "ping"], check=False).stdout, 20):
            raise SlurmUnavailable("slurmctld did not come up; see /var/log/slurm/slurmctld.log")
        _run(["/usr/sbin/slurmd"])
        if not _wait_for(lambda: self.node_state() == "idle", 30):
            raise SlurmUnavailable(f"node {self.host} not idle (state {self.node_state()!r}); "
                                   "see /var/log/slurm/slurmd.log")
        self.started = True

    @staticmethod
    def _munge_ok() -> bool:
        cred = _run(["munge", "-n"], check=False, input="")
        if cred.returncode != 0:
            return False
        out = _run(["unmunge"], check=False, input=cred.stdout)
        return "Success" in out.stdout

    def node_state(self) -> str:
        return _run(["sinfo", "-h", "-n", self.host, "-o", "%T"], check=False).stdout.strip()

    # --------------------------------------------------------------- tear-down
    def _ctld_up(self) -> bool:
        pid = _read_pid(CTLD_PID)
        return pid is not None and pid_alive(pid)

    def cancel_all(self, timeout: float = 30) -> None:
        """Cancel every job and wait until the queue is empty (incl. COMPLETING)."""
        if not self._ctld_up():
            return
        ids = _run(["squeue", "-h", "-o", "%i"], check=False).stdout.split()
        if ids:
            _run(["scancel", *ids], check=False)
            _wait_for(lambda: not _run(["squeue", "-h", "-o", "%i"], check=False).stdout.strip(),
                      timeout)
            time.sleep(0.5)  # let slurmstepd exit after reporting completion

    def stop(self) -> None:
        """Cancel all jobs, then stop slurmd, slurmctld and munged by their PIDs."""
        self.cancel_all()
        for name, pidfile in (("slurmd", SLURMD_PID), ("slurmctld", CTLD_PID),
                              ("munged", MUNGED_PID)):
            pid = _read_pid(pidfile)
            if pid is not None and pid_alive(pid):
                os.kill(pid, 15)
                if not _wait_for(lambda: not pid_alive(pid), 10, 0.1):
                    log.warning("%s (%d) ignored SIGTERM; SIGKILL", name, pid)
                    os.kill(pid, 9)
            pidfile.unlink(missing_ok=True)
        self.started = False

    # ------------------------------------------------------------ job helpers
    def sbatch(self, script: Path | str, *args: str, cwd: Path | None = None) -> int:
        out = _run(["sbatch", "--parsable", *args, str(script)], cwd=cwd)
        return int(out.stdout.strip().split(";")[0])

    def job_state(self, jobid: int) -> str:
        """State from squeue ('' once the job has left the queue), e.g. RUNNING, PENDING."""
        return _run(["squeue", "-h", "-j", str(jobid), "-o", "%T"], check=False).stdout.strip()

    def job_info(self, jobid: int) -> dict[str, str]:
        """`scontrol show job` as a dict (empty once the job record has been purged)."""
        out = _run(["scontrol", "-o", "show", "job", str(jobid)], check=False).stdout
        info: dict[str, str] = {}
        for token in out.split():
            if "=" in token:
                k, v = token.split("=", 1)
                info.setdefault(k, v)
        return info

    def wait_state(self, jobid: int, states: set[str] | str, timeout: float) -> str:
        wanted = {states} if isinstance(states, str) else set(states)
        _wait_for(lambda: self.job_state(jobid) in wanted, timeout, 0.2)
        return self.job_state(jobid)

    def wait_gone(self, jobid: int, timeout: float) -> bool:
        return _wait_for(lambda: self.job_state(jobid) == "", timeout, 0.5)

    def requeue(self, jobid: int) -> None:
        _run(["scontrol", "requeue", str(jobid)])

    def signal_batch(self, jobid: int, signal: str = "USR1") -> None:
        """Send a signal to the batch shell only, as Slurm does for --signal=B:SIG@T."""
        _run(["scancel", f"--signal={signal}", "--batch", str(jobid)])
