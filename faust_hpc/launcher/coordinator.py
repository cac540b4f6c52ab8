"""Rank 0's loop: claim ready units for free workers, record outcomes, retry, drain.

Rank 0 decides and waits; it never images. Each turn it (1) gives every free
worker the best ready unit (the policy: :class:`faust_hpc.scheduler.Scheduler`,
which this loop asks directly), claimed under the manifest lock in one claim
step (:class:`faust_hpc.run.claim.Claims`: the other launchers' new records
folded in, the ``started`` records written ahead of sending, with the
buffered end records and the lease heartbeat, one fsync), (2) waits for outcomes through the
transport (which never busy-waits), (3) folds them in: a done prepare unit
grows the graph by its real chunk list, a failed unit goes back to the ready
set until ``scheduler.retries`` extra attempts are used up -- unless it
failed on bad input (``UserInputError``), which no retry can fix, or its
clean diverged (``DivergenceError``: the guard stopped a runaway tclean; the
same data diverge again). A diverged unit is flagged in the summary with the
guard's reason; the units that need it (the image's finalize, moments, QA)
are reported as blocked and every other image goes on.

On SIGUSR1 or SIGTERM (Slurm's walltime warning, ``scancel``) it stops handing
out units, lets the running ones finish for a grace period, then interrupts
them (recorded ``interrupted``, not failed) and returns :data:`EXIT_DRAINED`,
so a batch script can requeue the job and the next run picks up from the
manifest.
"""
from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from faust_hpc.launcher import space
from faust_hpc.launcher.transport import Transport, WorkerInfo
from faust_hpc.launcher.worker import Outcome
from faust_hpc.layout import RunLayout
from faust_hpc.run.claim import Claims
from faust_hpc.run.leases import DEFAULT_LEASE_S, new_launcher
from faust_hpc.run.manifest import Manifest
from faust_hpc.run.records import UnitEvent, UnitStatus, end_record, unit_record
from faust_hpc.run.snapshot import SnapshotPolicy, load_state
from faust_hpc.run.view import describe_divergence, eta_seconds, fmt_duration
from faust_hpc.scheduler import Scheduler

log = logging.getLogger("faust_hpc.launcher")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_DRAINED = 3   # stopped by a signal: re-run (requeue) to finish
WAIT_FOR_OTHERS_S = 0.5   # nothing of ours runs, other launchers' units are left: look again this often


def make_scheduler(plan: Any, workers: list[WorkerInfo], done: Any = (), node_memory_gb: float = 0.0) -> Scheduler:
    """The scheduler over the transport's worker slots (MPI ranks, with the
    node each shares memory on): the run file's memory budget if set, else
    each node's MemTotal as its ranks reported it."""
    nodes = {w.rank: w.node for w in workers}
    budget: float | dict[str, float] = (float(node_memory_gb) if node_memory_gb and node_memory_gb > 0
                                        else {w.node: w.mem_gb for w in workers})
    return Scheduler(plan, nodes=nodes, node_memory_gb=budget, done=done)


@dataclass
class RunSummary:
    total: int = 0
    done: int = 0
    done_this_run: int = 0
    failed: dict[str, dict] = field(default_factory=dict)   # unit -> {"error", "log", "out", "traceback", "attempts",
    #                                                              "diverged" (the guard's stage/reason/... or None)}
    blocked: list[str] = field(default_factory=list)
    drained: bool = False
    no_space: str | None = None   # a unit failed on a full filesystem here: stopped like a drain
    elapsed: float = 0.0
    loop_cpu_s: float = 0.0   # CPU time rank 0 spent in its loop (it should mostly sleep)

    @property
    def exit_status(self) -> int:
        if self.failed or self.blocked:
            return EXIT_FAILED
        if self.drained or self.no_space or self.done < self.total:
            return EXIT_DRAINED
        return EXIT_OK

    def lines(self) -> list[str]:
        out = [f"{self.done}/{self.total} units done ({self.done_this_run} this run) in {fmt_duration(self.elapsed)}"]
        if self.no_space:
            out.append(f"stopped: {space.no_space_message(self.no_space)}; free space there and run the same "
                       f"command again to finish")
        elif self.drained:
            out.append("stopped early by a signal: run the same command again to finish")
        for uid, f in sorted(self.failed.items()):
            tb = f"  traceback: {f['traceback']}" if f.get("traceback") else ""
            if f.get("diverged"):
                out.append(f"DIVERGED {uid}: {describe_divergence(f['diverged'])} (flagged, not retried)  "
                           f"log: {f['log']}{tb}")
                continue
            out.append(f"FAILED {uid} after {f['attempts']} attempt(s): {f['error']}  "
                       f"log: {f['log']} (stdout/stderr: {f['out']}){tb}")
        if self.blocked:
            out.append(f"{len(self.blocked)} unit(s) not run because a unit they need failed: "
                       + ", ".join(self.blocked[:5]) + (" ..." if len(self.blocked) > 5 else ""))
        return out


class DrainSignals:
    """SIGUSR1 / SIGTERM set a flag; the loop does the rest (a handler must not)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.at: float | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "DrainSignals":
        if not self._old:  # re-entering (installed early by the launcher) keeps the first handlers
            for sig in (signal.SIGUSR1, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received, self.at = signum, time.time()

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


class Coordinator:
    """Rank 0's loop. Records go through ``claims`` (:class:`faust_hpc.run.claim.Claims`):
    units are claimed (``started``, write-ahead) under the manifest lock
    before they are sent; outcomes become end records here
    (:func:`~faust_hpc.run.records.end_record`), committed in groups.

    ``dirty``: units whose earlier attempt may have left partial products
    (resume's stale / failed / redone units): ``clean(uid)`` runs before they
    are sent. Units other launchers take over from a dead one join it."""

    def __init__(self, sched: Scheduler, transport: Transport, manifest: Manifest, *,
                 product_dir: Any, retries: int, attempts: dict[str, int] | None = None,
                 drain_grace_s: float = 60.0, term_grace_s: float = 10.0,
                 progress_interval_s: float = 5.0,
                 signals: DrainSignals | None = None, claims: Claims | None = None,
                 dirty: Iterable[str] = (), clean: Callable[[str], None] | None = None,
                 snapshots: SnapshotPolicy | None = None) -> None:
        self.signals = signals
        self.sched = sched
        self.transport = transport
        self.manifest = manifest
        self.product_dir = product_dir
        self.layout = RunLayout(product_dir)
        self.claims = claims if claims is not None else solo_claims(manifest, len(transport.workers))
        self.state = self.claims.state
        self.me = self.claims.me
        self.dirty: set[str] = set(dirty)
        self.clean = clean
        self.snapshots = snapshots
        self.retries = max(0, int(retries))
        self.attempt_seen = dict(attempts or {})     # highest attempt number in the manifest, per unit
        self.failures: dict[str, int] = {}           # failed attempts this run
        self.drain_grace_s = drain_grace_s
        self.term_grace_s = term_grace_s
        self.progress_interval_s = progress_interval_s
        self.summary = RunSummary()
        self._cost_done = 0.0
        self._cost_at_start: float | None = None
        self._last_progress = 0.0
        self._interrupt_sent: set[int] = set()
        self._workers = {w.rank: w for w in transport.workers}
        self._lapsed = False
        self._changed = True     # outcomes folded since the last claim step (new units may be ready)

    # ------------------------------------------------------------------ helpers
    def _next_attempt(self, uid: str) -> int:
        st = self.state.units.get(uid)
        n = max(self.attempt_seen.get(uid, 0), st.attempt if st is not None else 0) + 1
        self.attempt_seen[uid] = n
        return n

    def _free_ranks(self) -> list[int]:
        return [w.rank for w in self.transport.workers if w.rank not in self.sched.running]

    def _progress(self, t0: float, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_progress < self.progress_interval_s:
            return
        self._last_progress = now
        g = self.sched
        total = len(g.plan.units)
        done = len(g.done & set(g.plan.units))
        elapsed = now - t0
        eta = eta_seconds(g.remaining_cost(), self._cost_done, elapsed, self._cost_at_start or 0.0,
                          len(self.transport.workers))
        elsewhere = len(g.elsewhere_ids())
        log.info("progress: %d/%d units done, %d running%s, %d failed; elapsed %s, ETA %s",
                 done, total, len(g.running), f" (+{elsewhere} by other launchers)" if elsewhere else "",
                 len(self.summary.failed), fmt_duration(elapsed), fmt_duration(eta))

    # ------------------------------------------------------------------ the claim step
    def _step(self, free: list[int]) -> None:
        """Fold the others' records, assign, commit the claims; then clean and send."""
        picks: list[tuple[int, Any, int]] = []
        to_clean: list[str] = []

        def decide(touched: set[str]) -> list[dict]:
            self._fold_others(touched)
            self._release_dead()
            ahead: list[dict] = []
            for rank, unit in self.sched.assign(free) if free else []:
                st = self.state.units.get(unit.id)
                if self.state.claimed_elsewhere(unit.id, self.me):
                    # the records say a live launcher holds it (e.g. it took it over while our lease
                    # had lapsed): never claim it twice
                    self.sched.fail(unit.id, retry=True)
                    self.sched.claim_elsewhere(unit.id)
                    continue
                if st is not None and st.status == UnitStatus.RUNNING and st.launcher != self.me:
                    ahead.append(unit_record(unit.id, UnitEvent.INTERRUPTED, attempt=st.attempt, rank=0,
                                             error=f"its launcher {st.launcher} stopped before it finished",
                                             launcher=self.me))
                    self.dirty.add(unit.id)
                attempt = self._next_attempt(unit.id)
                w = self._workers.get(rank)
                ahead.append(unit_record(unit.id, UnitEvent.STARTED, attempt=attempt, rank=rank,
                                         host=w.host if w else None, log=str(self.layout.unit_log(unit.id, attempt)),
                                         threads=w.threads if w else None, launcher=self.me))
                picks.append((rank, unit, attempt))
                if unit.id in self.dirty:
                    to_clean.append(unit.id)
            return ahead

        wanted = bool(free) and (self._changed or self.claims.unseen or self.manifest.size() != self.state.offset
                                 or self._dead_elsewhere())
        self._changed = False
        try:
            self.claims.step(decide if wanted else None)
        except OSError as exc:
            if not space.exception_is_enospc(exc):
                raise
            for _rank, unit, _attempt in picks:   # not recorded: not sent
                self.sched.fail(unit.id, retry=True)
            if self.summary.no_space is None:
                log.error("%s: cannot record claims or outcomes; no new units", space.no_space_message(
                    self.manifest.path))
            self.summary.no_space = str(self.product_dir)
            return
        if self.snapshots is not None:
            self.snapshots.maybe_write(self.manifest, self.state)
        for uid in to_clean:
            if self.clean is not None:
                self.clean(uid)
            self.dirty.discard(uid)
        for rank, unit, attempt in picks:
            log.debug("rank %d <- %s (attempt %d)", rank, unit.id, attempt)
            self.transport.submit(rank, unit, attempt)

    def _dead_elsewhere(self) -> bool:
        """Has a launcher whose units we wait for died (its lease ran out) since the last step?"""
        lids = {st.launcher for uid in self.sched.elsewhere_ids() if (st := self.state.units.get(uid))}
        return any(not self.state.alive(lid) for lid in lids)

    def _fold_others(self, touched: set[str]) -> None:
        """The other launchers' records since the last step, into the scheduler."""
        g, units = self.sched, self.sched.plan.units
        ours = set(g.running.values())
        for uid in sorted(touched, key=lambda u: (units[u].kind != "prepare") if u in units else True):
            st = self.state.units.get(uid)
            if st is None or uid not in g.plan.units or uid in ours or uid in g.done:
                continue
            if st.status == UnitStatus.RUNNING:
                if st.launcher != self.me and self.state.alive(st.launcher):
                    g.claim_elsewhere(uid)
                continue
            g.release_elsewhere(uid)
            if st.status == UnitStatus.DONE:
                unit = units[uid]
                nchunks = st.info.get("nchunks") if unit.kind == "prepare" else None
                g.complete(uid, nchunks=None if nchunks is None else int(nchunks))
                self._cost_done += float(unit.cost)
            elif st.status == UnitStatus.FAILED and st.final and uid not in g.dead:
                g.fail(uid, retry=False)
                self.summary.failed[uid] = {
                    "error": st.error, "error_type": st.error_type, "traceback": st.traceback,
                    "attempts": st.failures, "log": st.log or "?", "out": "?", "diverged": st.diverged}
            elif st.status in (UnitStatus.FAILED, UnitStatus.INTERRUPTED):
                self.dirty.add(uid)   # free again; its attempt may have left partial products

    def _release_dead(self) -> None:
        """Units claimed by launchers that died since: free for us (cleaned first)."""
        alive: dict[str | None, bool] = {}
        for uid in self.sched.elsewhere_ids():
            st = self.state.units.get(uid)
            lid = st.launcher if st is not None else None
            if lid not in alive:
                alive[lid] = self.state.alive(lid)
            if st is None or st.status != UnitStatus.RUNNING or not alive[lid]:
                self.sched.release_elsewhere(uid)
                self.dirty.add(uid)
                if st is not None and st.status == UnitStatus.RUNNING:
                    log.warning("taking over %s from launcher %s (its lease is gone)", uid, lid)

    # ------------------------------------------------------------------ the loop
    def run(self) -> RunSummary:
        t0 = time.time()
        cpu0 = time.process_time()
        g = self.sched
        self._cost_at_start = g.remaining_cost()
        with (self.signals or DrainSignals()) as sig:
            while True:
                if self.claims.lease_lapsed() and g.running and not self._lapsed:
                    # another launcher may have taken our units: stop them, claim again
                    self._lapsed = True
                    log.error("this launcher's lease ran out (no heartbeat for %g s): interrupting its %d "
                              "running unit(s) to claim them again", self.claims.lease_s, len(g.running))
                    for rank in list(g.running):
                        self.transport.interrupt(rank, "interrupted: this launcher's lease ran out")
                if sig.received is None and self.summary.no_space is None:
                    self._step(self._free_ranks())
                else:
                    if sig.received is not None and not self.summary.drained:
                        self.summary.drained = True
                        name = signal.Signals(sig.received).name
                        log.warning("%s received: no new units; %d running unit(s) may finish", name,
                                    len(g.running))
                    self._step([])
                if not g.running and (not g.elsewhere_ids() or sig.received is not None
                                      or self.summary.no_space is not None):
                    break
                if sig.received is not None:
                    grace = self.drain_grace_s if sig.received == signal.SIGUSR1 else self.term_grace_s
                    if time.time() - (sig.at or 0) > grace:
                        for rank in list(g.running):
                            if rank not in self._interrupt_sent:
                                self._interrupt_sent.add(rank)
                                self.transport.interrupt(rank, f"interrupted: drain grace of {grace:g} s ran out")
                if g.running:
                    for outcome in self.transport.poll(max_wait=0.5):
                        self._fold(outcome)
                        self._changed = True
                else:
                    time.sleep(WAIT_FOR_OTHERS_S)   # only other launchers' units are left: watch them
                self._progress(t0)
        s = self.summary
        s.elapsed = time.time() - t0
        s.loop_cpu_s = time.process_time() - cpu0
        s.total = len(g.plan.units)
        s.done = len(g.done & set(g.plan.units))
        s.blocked = [u for u in g.blocked_ids() if u not in s.failed]
        self._progress(t0, force=True)
        return s

    def _record(self, outcome: Outcome, final: bool = False) -> None:
        self.claims.journal.add(end_record(outcome, launcher=self.me, final=final))

    def finish(self, record: Any) -> None:
        """Commit what is still buffered, then the ``finish`` record; write the snapshot."""
        try:
            self.claims.step(lambda _touched: [record], force=True)
        except OSError as exc:
            if not space.exception_is_enospc(exc):
                raise
            # unrecorded, this launcher's last units read as started by a dead launcher: cleaned and redone
            log.error("%s: cannot record how this launcher ended", space.no_space_message(self.manifest.path))
            return
        if self.snapshots is not None:
            self.snapshots.maybe_write(self.manifest, self.state, force=True)

    def _fold(self, outcome: Outcome) -> None:
        g = self.sched
        uid = outcome.unit
        unit = g.plan.units.get(uid)
        if outcome.status == UnitStatus.DONE:
            self._record(outcome)
            self._cost_done += float(unit.cost) if unit is not None else 0.0
            nchunks = outcome.info.get("nchunks") if unit is not None and unit.kind == "prepare" else None
            g.complete(uid, nchunks=None if nchunks is None else int(nchunks))
            self.summary.done_this_run += 1
            log.debug("done %s on rank %d in %.1f s", uid, outcome.rank, outcome.elapsed)
            return
        if outcome.status == UnitStatus.INTERRUPTED:
            self._record(outcome)
            g.fail(uid, retry=True)  # back to ready; a drained coordinator hands nothing out any more
            log.warning("interrupted %s (attempt %d): %s", uid, outcome.attempt, outcome.error)
            return
        if outcome.no_space:
            self._record(outcome)
            g.fail(uid, retry=True)  # not the unit's fault: no retry spent, nothing more handed out
            if self.summary.no_space is None:
                log.error("%s (unit %s failed on it): no new units; free space and run again",
                          space.no_space_message(outcome.no_space), uid)
            self.summary.no_space = outcome.no_space
            return
        n = self.failures[uid] = self.failures.get(uid, 0) + 1
        final = n > self.retries or not outcome.retry
        self._record(outcome, final=final)
        g.fail(uid, retry=not final)
        if final:
            self.summary.failed[uid] = {
                "error": outcome.error, "error_type": outcome.error_type, "traceback": outcome.traceback,
                "attempts": n, "log": outcome.log or str(self.layout.unit_log(uid, outcome.attempt)),
                "out": outcome.out or str(self.layout.unit_out(uid, outcome.attempt)), "diverged": outcome.diverged}
            if outcome.diverged:
                log.error("DIVERGED %s (attempt %d, flagged, not retried; its dependents cannot run): %s; log %s",
                          uid, outcome.attempt, outcome.error, outcome.log)
                return
            why = "bad input, not retried" if not outcome.retry else "no retries left"
            log.error("FAILED %s (attempt %d, %s): %s; log %s", uid, outcome.attempt, why,
                      outcome.error, outcome.log)
        else:
            log.warning("failed %s (attempt %d, will retry): %s; log %s", uid, outcome.attempt,
                        outcome.error, outcome.log)


def solo_claims(manifest: Manifest, workers: int, lease_s: float = DEFAULT_LEASE_S,
                command: str = "coordinator") -> Claims:
    """Join the run as a launcher of its own (benchmarks and tests that drive a
    :class:`Coordinator` directly; the launcher joins in :mod:`faust_hpc.launcher`)."""
    return Claims.join(manifest, load_state(manifest), new_launcher(lease_s, ranks=workers + 1, workers=workers,
                                                                    command=command))
