"""The scheduling policy: who runs what next. Pure Python, no MPI, no clock.

The same object drives the MPI launcher (rank 0), ``faust-hpc plan`` and the
benchmarks (under a simulated clock, :func:`simulate_schedule`), so what the
plan predicts is what the launcher does.

API (small on purpose)::

    from faust_hpc.scheduler import Scheduler, simulate_schedule, workers_for_ranks

    sched = Scheduler(plan, nodes={1: "nodeA", 2: "nodeA", 3: "nodeB"},   # worker id -> node
                      node_memory_gb={"nodeA": 64.0, "nodeB": 64.0},      # or one float; 0 = unlimited
                      done=already_done_ids)                              # resume: trusted done units
    for worker, unit in sched.assign(free_worker_ids):   # marks them running
        send(worker, unit)
    sched.complete(unit_id)                  # done -> dependents may become ready
    sched.complete(prepare_id, nchunks=n)    # a prepare reports its real chunk count:
                                             # plan.expand() + new chunk units become ready
    sched.fail(unit_id, retry=True)          # back to the ready set (the launcher counts attempts)
    sched.fail(unit_id, retry=False)         # failed for good: its dependents are blocked
    sched.finished                           # nothing ready or running any more
    sched.ready_ids(), sched.running, sched.blocked_ids(), sched.remaining_cost()
    sched.priority(unit_id)                  # the sort key assign() uses (smaller first)

Policy:

* **Largest estimated cost first.** A ready unit's priority
  (:meth:`Scheduler.priority`) is its cost plus the costliest chain of units
  waiting on it (its "bottom level"), then its own cost, then its id
  (deterministic). Among the chunks of one image this is plain
  largest-cost-first; across images it starts the work that has the most
  waiting behind it (a heavy window's prepare before a light window's chunk),
  which keeps a large finalize from being left for the end.
* **No barriers.** Readiness is tracked per unit: an image's beam unit is
  ready the moment its last chunk is done, its post units right after it, its
  finalize after its last post, its moments and QA right after that, and they
  run as soon as their priority comes up — never only at the end of the run.
  ``finish_images_first=True`` goes further and runs a ready beam/post/
  finalize/moments/QA before any chunk (products appear SPW by SPW); on a full
  FAUST field it costs <= 1.5 % of simulated makespan, so it is an option.
* **Memory-aware.** Workers on one node never run units whose ``mem_gb``
  together exceed that node's budget. A unit bigger than the whole budget runs
  alone on an otherwise idle node rather than never. Lower-priority units that
  fit may backfill around a unit that waits for memory.
* **Dynamic expansion.** ``complete(prepare_id, nchunks=n)`` replaces the
  predicted chunk units (``Plan.expand``) and re-prioritises that image.

Rank 0's work per decision is proportional to what changed, not to the plan
or the allocation: idle workers wait in per-node heaps (ordered by ``str`` of
the worker id once, when a worker first becomes idle, so the choice is the
same as sorting them every time), stale ready-heap entries are dropped when
popped, and a prepare that re-shapes its image updates that image's units
only (``Plan.replace_image``).

``Scheduler`` mutates the plan it is given on expansion (the launcher and the
scheduler share one graph); :func:`simulate_schedule` works on a copy.

Ranks and workers: under MPI, rank 0 runs this policy and ranks 1..N-1 are
workers, so N ranks give N - 1 workers; one rank (or no mpirun) runs units
serially on one worker (:func:`workers_for_ranks`).
"""
from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Mapping, Protocol

from faust_hpc.units import ImageKey, Unit

DEFAULT_NODE = "local"
_FINISHING = ("beam", "post", "concat", "finalize", "moments", "qa")


class UnitGraph(Protocol):
    """What the policy needs of a unit graph (:class:`faust_hpc.plan.Plan` is one).

    Declared here, not imported from :mod:`faust_hpc.plan`, because the plan
    layer runs this policy (``nchunks = "auto"`` simulates schedules): plan
    imports scheduler, never the other way round."""

    units: dict[str, Unit]

    def copy(self) -> "UnitGraph": ...
    def successors(self) -> dict[str, list[str]]: ...
    def bottom_levels(self) -> dict[str, float]: ...
    def critical_path(self) -> tuple[float, list[str]]: ...
    def units_of(self, key: ImageKey) -> list[Unit]: ...
    def nchunks(self, key: ImageKey) -> int: ...
    def expand(self, prepare_id: str, nchunks: int) -> list[Unit]: ...
    @property
    def total_cost(self) -> float: ...


def workers_for_ranks(ranks: int) -> int:
    """Worker slots of an MPI job with ``ranks`` ranks (rank 0 schedules)."""
    return 1 if ranks <= 1 else ranks - 1


class Scheduler:
    """Ready-set bookkeeping plus the assignment policy (see the module doc)."""

    def __init__(self, plan: UnitGraph, nodes: Mapping[Hashable, str] | None = None,
                 node_memory_gb: float | Mapping[str, float] | None = 0.0,
                 done: Iterable[str] = (), finish_images_first: bool = False) -> None:
        self.plan = plan
        self.finish_images_first = finish_images_first
        self.nodes: dict[Hashable, str] = dict(nodes or {})
        self._budget = node_memory_gb
        self.done: set[str] = {uid for uid in done if uid in plan.units}
        self.dead: set[str] = set()
        self.running: dict[Hashable, str] = {}       # worker -> unit id
        self._where: dict[str, Hashable] = {}        # unit id -> worker
        self._load: dict[str, float] = {}            # node -> GB in use
        # idle workers: per node a heap of (str(worker), first seen, worker); the set says who is in one
        self._free: dict[str, list[tuple[str, int, Hashable]]] = {}
        self._idle: set[Hashable] = set()
        self._seen: dict[Hashable, int] = {}
        for worker in self.nodes:
            self._add_idle(worker)
        self._rebuild()

    # ------------------------------------------------------------ internals
    def _rebuild(self) -> None:
        """(Re)compute priorities, missing-dependency counts and the ready heap."""
        units = self.plan.units
        self._succ = self.plan.successors()
        self._level = self.plan.bottom_levels()
        self._missing = {uid: sum(1 for d in u.deps if d not in self.done) for uid, u in units.items()}
        self._ready: set[str] = {uid for uid, n in self._missing.items()
                                 if n == 0 and uid not in self.done and uid not in self.dead
                                 and uid not in self._where}
        self._heap = [self.priority(uid) for uid in self._ready]
        heapq.heapify(self._heap)

    def _add_idle(self, worker: Hashable) -> None:
        if worker in self._idle:
            return
        seen = self._seen.setdefault(worker, len(self._seen))
        self._idle.add(worker)
        heapq.heappush(self._free.setdefault(self._node(worker), []), (str(worker), seen, worker))

    def _resync_image(self, key: ImageKey, old: list[Unit]) -> list[str]:
        """Readiness and priorities of one re-shaped image (see ``Plan.replace_image``)."""
        self._succ = self.plan.successors()
        self._level = self.plan.bottom_levels()
        new = self.plan.units_of(key)
        new_ids = {u.id for u in new}
        for unit in old:
            if unit.id not in new_ids:
                self._missing.pop(unit.id, None)
                self._ready.discard(unit.id)
        newly = []
        for unit in new:
            uid = unit.id
            self._missing[uid] = sum(1 for d in unit.deps if d not in self.done)
            if self._missing[uid] == 0 and uid not in self.done and uid not in self.dead \
                    and uid not in self._where and uid not in self._ready:
                newly.append(uid)
        for uid in getattr(self.plan, "last_changed", ()):   # a new priority; the old heap entry goes stale
            if uid in self._ready:
                heapq.heappush(self._heap, self.priority(uid))
        for uid in newly:
            self._push(uid)
        return sorted(newly)

    def priority(self, uid: str) -> tuple[int, float, float, str]:
        """Sort key of a unit: smaller runs first (see the module doc)."""
        unit = self.plan.units[uid]
        first = 0 if (self.finish_images_first and unit.kind in _FINISHING) else 1
        return (first, -self._level[uid], -unit.cost, uid)


    def _push(self, uid: str) -> None:
        if uid not in self._ready:
            self._ready.add(uid)
            heapq.heappush(self._heap, self.priority(uid))

    def budget(self, node: str) -> float:
        """Memory budget of a node in GB (inf = unlimited)."""
        b = self._budget.get(node, 0.0) if isinstance(self._budget, Mapping) else self._budget
        return float(b) if b and b > 0 else math.inf

    def _node(self, worker: Hashable) -> str:
        return self.nodes.get(worker, DEFAULT_NODE)

    # ------------------------------------------------------------ queries
    @property
    def finished(self) -> bool:
        return not self._ready and not self.running

    def ready_ids(self) -> list[str]:
        """Ready units in the order they would be assigned."""
        return [entry[-1] for entry in sorted(self.priority(u) for u in self._ready)]

    def blocked_ids(self) -> list[str]:
        """Units that cannot run because something they need failed for good."""
        blocked: set[str] = set()
        stack = list(self.dead)
        while stack:
            for s in self._succ.get(stack.pop(), ()):
                if s not in blocked and s not in self.done:
                    blocked.add(s)
                    stack.append(s)
        return sorted(blocked)

    def remaining_cost(self) -> float:
        blocked = set(self.blocked_ids())
        return sum(u.cost for uid, u in self.plan.units.items()
                   if uid not in self.done and uid not in self.dead and uid not in blocked)

    def node_load(self, node: str) -> float:
        return self._load.get(node, 0.0)

    # ------------------------------------------------------------ policy
    def assign(self, free_workers: Iterable[Hashable] | None = None) -> list[tuple[Hashable, Unit]]:
        """Give ready units to free workers, highest priority first, within each
        node's memory budget. Returns ``[(worker, unit)]`` and marks them running.

        ``free_workers``: the workers that may take a unit now (a worker not seen
        before joins the idle pool); None = every idle worker the scheduler knows
        (those of ``nodes``, and every worker whose unit finished or failed). Per
        node the worker with the smallest ``str`` goes first."""
        if not self._heap:
            return []
        offered: set[Hashable] | frozenset[Hashable] | None = None
        if free_workers is not None:
            offered = free_workers if isinstance(free_workers, (set, frozenset)) else set(free_workers)
            for w in offered - self._idle:                 # set algebra in C: usually nothing new
                if w not in self.running:
                    self._add_idle(w)
            if offered >= self._idle:                      # every idle worker offered: nothing to filter
                offered = None
        picks: list[tuple[Hashable, Unit]] = []
        skipped: list[tuple[int, float, float, str]] = []
        passed: list[tuple[str, tuple[str, int, Hashable]]] = []   # idle but not offered: back after
        nodes = set(self._free)        # nodes that may still have an eligible idle worker
        units = self.plan.units
        while nodes and self._heap:
            entry = heapq.heappop(self._heap)
            uid = entry[-1]
            if uid not in self._ready or uid not in units or entry != self.priority(uid):
                continue                                   # stale heap entry
            unit = units[uid]
            worker = None
            while worker is None:
                best_node, best_room = None, -math.inf
                for node in nodes:
                    load = self._load.get(node, 0.0)
                    room = self.budget(node) - load - unit.mem_gb
                    if (room >= 0 or load == 0.0) and (room > best_room or
                                                       (room == best_room and node < best_node)):
                        best_node, best_room = node, room
                if best_node is None:
                    break
                worker = self._take_idle(best_node, offered, passed)
                if worker is None:
                    nodes.discard(best_node)
            if worker is None:
                skipped.append(entry)
                continue
            if best_node not in self._free:
                nodes.discard(best_node)
            self._ready.discard(uid)
            self.running[worker] = uid
            self._where[uid] = worker
            self._load[best_node] = self._load.get(best_node, 0.0) + unit.mem_gb
            picks.append((worker, unit))
        for entry in skipped:
            heapq.heappush(self._heap, entry)
        for node, item in passed:
            heapq.heappush(self._free.setdefault(node, []), item)
        return picks

    def _take_idle(self, node: str, offered: set[Hashable] | frozenset[Hashable] | None,
                   passed: list[tuple[str, tuple[str, int, Hashable]]]) -> Hashable | None:
        """The first idle worker of ``node`` that is offered (None: there is none)."""
        heap = self._free.get(node)
        while heap:
            item = heapq.heappop(heap)
            worker = item[-1]
            if offered is not None and worker not in offered:
                passed.append((node, item))
                continue
            if not heap:
                del self._free[node]
            self._idle.discard(worker)
            return worker
        self._free.pop(node, None)
        return None

    def _release(self, uid: str) -> None:
        worker = self._where.pop(uid, None)
        if worker is not None:
            self.running.pop(worker, None)
            node = self._node(worker)
            self._load[node] = max(0.0, self._load.get(node, 0.0) - self.plan.units[uid].mem_gb)
            self._add_idle(worker)

    def complete(self, unit_id: str, nchunks: int | None = None) -> list[str]:
        """Record a done unit; returns the ids that became ready. A prepare unit
        may report its real chunk count, which re-shapes the graph."""
        if unit_id not in self.plan.units:
            raise KeyError(f"unknown unit {unit_id}")
        self._release(unit_id)
        self._ready.discard(unit_id)
        self.done.add(unit_id)
        unit = self.plan.units[unit_id]
        if unit.kind == "prepare" and nchunks is not None and int(nchunks) != self.plan.nchunks(unit.key):
            old = self.plan.units_of(unit.key)
            self.plan.expand(unit_id, int(nchunks))
            return self._resync_image(unit.key, old)
        newly = []
        for s in self._succ.get(unit_id, ()):
            self._missing[s] -= 1
            if self._missing[s] == 0 and s not in self.done and s not in self.dead and s not in self._where:
                self._push(s)
                newly.append(s)
        return newly

    def fail(self, unit_id: str, retry: bool = True) -> None:
        """A unit failed: back to the ready set (``retry``) or dead for good."""
        self._release(unit_id)
        if retry:
            self._push(unit_id)
        else:
            self._ready.discard(unit_id)
            self.dead.add(unit_id)

    # ------------------------------------------------------------ units another launcher runs
    # (added for several launchers on one run, faust_hpc.run.claim; kept apart from the policy)
    def claim_elsewhere(self, unit_id: str) -> bool:
        """Another launcher holds a live lease on ``unit_id``: not assignable
        here (out of the ready set, as a running unit is, on no worker of ours)
        until :meth:`release_elsewhere` or :meth:`complete`."""
        if unit_id not in self.plan.units or unit_id in self.done or unit_id in self._where:
            return False
        self._ready.discard(unit_id)
        self._where[unit_id] = _Elsewhere(unit_id)
        return True

    def release_elsewhere(self, unit_id: str) -> None:
        """The other launcher died or gave ``unit_id`` back: assignable here
        again once its dependencies are done. Call before :meth:`complete` /
        :meth:`fail` of a unit claimed elsewhere."""
        if isinstance(self._where.get(unit_id), _Elsewhere):
            del self._where[unit_id]
            if self._missing.get(unit_id) == 0 and unit_id not in self.done and unit_id not in self.dead:
                self._push(unit_id)

    def elsewhere_ids(self) -> list[str]:
        return sorted(u for u, w in self._where.items() if isinstance(w, _Elsewhere))


@dataclass(frozen=True)
class _Elsewhere:
    """Where a unit claimed by another launcher runs (never one of our workers)."""

    unit: str


# ----------------------------------------------------------------------------
# Simulated clock
# ----------------------------------------------------------------------------

@dataclass
class SimResult:
    """Outcome of a simulated run: times in the plan's cost unit (reference s)."""

    workers: int
    makespan: float
    lower_bound: float            # max(critical path, total work / workers)
    total_cost: float
    critical_path_cost: float
    tight_lower_bound: float = 0.0  # image_lower_bound(): also counts each image's own chain
    policy_s: float = 0.0         # CPU time spent in Scheduler.assign + complete (rank 0's decisions)
    timeline: list[tuple[str, Hashable, float, float]] = field(default_factory=list)  # (unit, worker, start, end)

    @property
    def efficiency(self) -> float:
        """Total work / (workers x makespan): 1.0 = no worker ever idle."""
        return self.total_cost / (self.workers * self.makespan) if self.makespan else 1.0

    @property
    def balance(self) -> float:
        """Makespan / (total work / workers): the load-balance figure (1.0 = perfect)."""
        return self.makespan * self.workers / self.total_cost if self.total_cost else 1.0


def simulate_schedule(plan: UnitGraph, workers: int, *, workers_per_node: int | None = None,
                      node_memory_gb: float | Mapping[str, float] = 0.0,
                      actual_nchunks: Mapping[str, int] | None = None,
                      timeline: bool = True, finish_images_first: bool = False) -> SimResult:
    """Run the policy on a copy of ``plan`` with ``workers`` workers, each unit
    taking exactly its estimated cost. ``workers_per_node`` spreads workers over
    nodes named ``node0``, ``node1``, ... (default: all on one node);
    ``actual_nchunks`` (prepare id -> count) makes prepare units report a chunk
    count different from the prediction, exercising dynamic expansion."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    work = plan.copy()
    per_node = workers_per_node or workers
    nodes = {w: f"node{w // per_node}" for w in range(workers)}
    sched = Scheduler(work, nodes=nodes, node_memory_gb=node_memory_gb,
                      finish_images_first=finish_images_first)
    actual = actual_nchunks or {}
    events: list[tuple[float, int, int, str]] = []
    now, seq = 0.0, 0
    policy = 0.0
    lines: list[tuple[str, Hashable, float, float]] = []
    while True:
        t0 = time.process_time()
        picks = sched.assign()           # every idle worker (the scheduler keeps them)
        policy += time.process_time() - t0
        for worker, unit in picks:
            end = now + unit.cost
            heapq.heappush(events, (end, seq, worker, unit.id))
            seq += 1
            if timeline:
                lines.append((unit.id, worker, now, end))
        if not events:
            break
        now = events[0][0]
        while events and events[0][0] == now:
            _, _, worker, uid = heapq.heappop(events)
            unit = work.units[uid]
            t0 = time.process_time()
            sched.complete(uid, nchunks=actual.get(uid) if unit.kind == "prepare" else None)
            policy += time.process_time() - t0
    if not sched.finished or len(sched.done) != len(work.units):
        raise RuntimeError("simulation stalled: some units never became ready")
    total = work.total_cost
    cp = work.critical_path()[0]
    return SimResult(workers=workers, makespan=now, lower_bound=max(cp, total / workers),
                     total_cost=total, critical_path_cost=cp, timeline=lines,
                     tight_lower_bound=image_lower_bound(work, workers), policy_s=policy)


def image_lower_bound(plan: UnitGraph, workers: int) -> float:
    """A tighter makespan bound no schedule can beat: the largest of the
    critical path, total work / workers, and, per image, its own chain:
    prepare + its chunk work spread over all workers (but at least its largest
    chunk) + beam + its post work spread likewise + its largest concat unit
    (they run side by side) + finalize + its largest product (each step of an
    image waits for the one before it)."""
    total = plan.total_cost
    bound = max(plan.critical_path()[0], total / workers)
    by_key: dict[Any, dict[str, list[float]]] = {}
    for unit in plan.units.values():
        by_key.setdefault(unit.key, {}).setdefault(unit.kind, []).append(unit.cost)

    def spread(costs: list[float]) -> float:
        return max(sum(costs) / workers, max(costs)) if costs else 0.0

    for kinds in by_key.values():
        if not kinds.get("chunk"):
            continue
        chain = sum(kinds.get("prepare", ())) + spread(kinds["chunk"]) + sum(kinds.get("beam", ())) + \
            spread(kinds.get("post", [])) + max(kinds.get("concat", []), default=0.0) + \
            sum(kinds.get("finalize", ())) + \
            max(kinds.get("moments", []) + kinds.get("qa", []), default=0.0)
        bound = max(bound, chain)
    return bound


__all__ = ["Scheduler", "SimResult", "simulate_schedule", "image_lower_bound", "workers_for_ranks", "DEFAULT_NODE"]
