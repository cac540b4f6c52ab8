"""Leases: how several launchers (Slurm jobs, a job array, a workstation) share one run.

Why leases rather than one owner: a run may be drained by any number of
launchers at once, and any of them can die at any instruction (kill -9, node
failure, walltime) without a chance to say so. Each launcher writes a
``launcher`` record when it joins and a ``lease`` heartbeat every
``lease_s / 3`` seconds; one heartbeat renews every unit it runs. A unit is
*claimed* while the launcher named in its ``started`` record is alive and no
end record followed. A launcher is *dead* when

- its lease ran out (no heartbeat for ``lease_s``), or
- it wrote its ``finish`` record, or
- ``--break-lock`` revoked it (a ``revoke`` record), or
- it ran on this host and its process is gone (checked by pid and process
  start, so the others need not wait out the lease), or
- a later launcher of the same Slurm job started (Slurm runs one incarnation
  of a requeued job at a time).

A dead launcher's claimed-not-finished units are free for the others; they
are cleaned (partial outputs removed) before they run again. Records written
before leases existed name no launcher: their running units belong to a
launcher that is gone (one owner per run was enforced then).
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass

from faust_hpc.run.claim import pid_alive, proc_start_ticks
from faust_hpc.run.records import LauncherRecord, RunEvent, hostname, now
from faust_hpc.runfile import SchedulerSettings

DEFAULT_LEASE_S = SchedulerSettings().lease_s   # the run file's [scheduler] lease_s owns the number
HEARTBEAT_FRACTION = 1 / 3   # a heartbeat every lease_s / 3: two may be late before the lease runs out

_LAUNCHER, _LEASE, _REVOKE, _FINISH = (RunEvent.LAUNCHER.value, RunEvent.LEASE.value, RunEvent.REVOKE.value,
                                       RunEvent.FINISH.value)
LEASE_EVENTS = frozenset((_LAUNCHER, _LEASE, _REVOKE, _FINISH))


@dataclass
class LauncherState:
    """What the records say about one launcher."""

    id: str
    host: str = ""
    pid: int = 0
    start_ticks: int | None = None
    lease_s: float = DEFAULT_LEASE_S
    until: float = 0.0            # its claims hold until then (latest heartbeat)
    joined: float = 0.0
    finished: bool = False
    revoked: bool = False
    superseded: bool = False      # a later incarnation of its Slurm job started
    command: str | None = None
    ranks: int = 1
    workers: int = 1
    slurm_job: str | None = None
    slurm_array_task: str | None = None
    slurm_restart: int | None = None

    def alive(self, at: float | None = None, here: str | None = None) -> bool:
        """Does it still hold its claims? (One on another host: while its lease lasts.)"""
        if self.finished or self.revoked or self.superseded:
            return False
        if self.until <= (time.time() if at is None else at):
            return False
        if self.host == (here or hostname()) and self.pid and not pid_alive(self.pid, self.start_ticks):
            return False
        return True

    def verifiably_alive_here(self) -> bool:
        """A launcher on this host whose process (pid and start time) runs now."""
        return (not self.finished and self.host == hostname() and self.start_ticks is not None
                and pid_alive(self.pid, self.start_ticks))

    def describe(self) -> str:
        job = f" job {self.slurm_job}" if self.slurm_job else ""
        return f"host {self.host} pid {self.pid}{job}"

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, False)}

    @classmethod
    def from_json(cls, data: dict) -> "LauncherState":
        return cls(**data)


def fold_launcher(launchers: dict[str, LauncherState], raw: dict) -> str | None:
    """Fold one manifest line into the launcher table; the launcher id it
    touched (None for a line about no launcher)."""
    event = raw.get("event")
    if event not in LEASE_EVENTS:
        return None
    if event == _LEASE:
        lid = raw.get("launcher")
        st = launchers.get(lid) if lid else None
        if st is not None:
            st.until = max(st.until, float(raw.get("until") or 0.0))
        return lid
    if event == _LAUNCHER:
        lid = raw.get("id") or ""
        st = LauncherState(lid, host=raw.get("host", ""), pid=int(raw.get("pid") or 0),
                           start_ticks=raw.get("start_ticks"), lease_s=float(raw.get("lease_s") or DEFAULT_LEASE_S),
                           until=float(raw.get("until") or 0.0), joined=float(raw.get("time") or 0.0),
                           command=raw.get("command"), ranks=int(raw.get("ranks") or 1),
                           workers=int(raw.get("workers") or 1), slurm_job=raw.get("slurm_job"),
                           slurm_array_task=raw.get("slurm_array_task"), slurm_restart=raw.get("slurm_restart"))
        if st.slurm_job:
            for other in launchers.values():  # Slurm runs one incarnation of a job at a time
                if other.slurm_job == st.slurm_job and other.slurm_array_task == st.slurm_array_task:
                    other.superseded = True
        launchers[lid] = st
        return lid
    if event == _REVOKE:
        for lid in raw.get("launchers") or ():
            if lid in launchers:
                launchers[lid].revoked = True
        return None
    lid = raw.get("launcher")   # finish
    if lid and lid in launchers:
        launchers[lid].finished = True
    return lid


def slurm_identity() -> dict:
    """This process's Slurm job, array task and restart count (empty outside Slurm)."""
    env = os.environ
    restart = env.get("SLURM_RESTART_COUNT", "")
    return {"slurm_job": env.get("SLURM_JOB_ID") or None,
            "slurm_array_task": env.get("SLURM_ARRAY_TASK_ID") or None,
            "slurm_restart": int(restart) if restart.isdigit() else None}


def new_launcher(lease_s: float, *, ranks: int, workers: int, command: str) -> LauncherRecord:
    """This process's ``launcher`` record (a fresh id; its first lease starts now)."""
    pid = os.getpid()
    lid = f"{hostname()}:{pid}:{uuid.uuid4().hex[:8]}"
    t = now()
    return LauncherRecord(id=lid, time=t, pid=pid, start_ticks=proc_start_ticks(pid), lease_s=float(lease_s),
                          until=round(t + float(lease_s), 6), ranks=ranks, workers=workers, command=command,
                          **slurm_identity())


__all__ = ["LauncherState", "fold_launcher", "new_launcher", "slurm_identity", "DEFAULT_LEASE_S",
           "HEARTBEAT_FRACTION", "LEASE_EVENTS"]
