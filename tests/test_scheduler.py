"""The scheduling policy on real plans: order, readiness, memory, expansion,
failure bookkeeping, and the simulated clock."""
from __future__ import annotations

from pathlib import Path

import pytest

from faust_hpc.plan import build_plan
from faust_hpc.runfile import load_runfile
from faust_hpc.scheduler import Scheduler, image_lower_bound, simulate_schedule, workers_for_ranks

CS = "CB68/244.936GHz_CS/joint/0.5"
CONT = "CB68/246.700GHz_cont/joint/0.5"


def make_plan(tmp_path: Path, spws: str = '["244.936GHz_CS", "246.700GHz_cont"]', extra: str = "",
              name: str = "run.toml"):
    path = tmp_path / name
    path.write_text('[run]\ndata_dir = "absent"\nproduct_dir = "products"\n'
                    f'[imaging]\nfields = ["CB68"]\nsetup = 2\nspws = {spws}\n{extra}')
    return build_plan(load_runfile(path, check_paths=False))


def overlapping(timeline, predicate):
    """Max over time of the summed value of running units that satisfy predicate."""
    events = []
    for uid, worker, start, end in timeline:
        value = predicate(uid, worker)
        if value:
            events += [(start, 1, value), (end, 0, -value)]
    level = peak = 0.0
    for _, _, delta in sorted(events):
        level += delta
        peak = max(peak, level)
    return peak


def test_workers_for_ranks():
    assert [workers_for_ranks(n) for n in (1, 2, 8, 64)] == [1, 1, 7, 63]


def test_one_worker_runs_everything_back_to_back(tmp_path):
    plan = make_plan(tmp_path)
    sim = simulate_schedule(plan, 1)
    assert sim.makespan == pytest.approx(plan.total_cost)
    assert sim.lower_bound == pytest.approx(plan.total_cost)
    assert len(sim.timeline) == len(plan.units)
    starts = {uid: s for uid, _, s, _ in sim.timeline}
    for unit in plan.units.values():                     # dependencies respected
        for dep in unit.deps:
            assert starts[unit.id] >= starts[dep] + plan.units[dep].cost - 1e-6


def test_largest_cost_first_among_ready_units(tmp_path):
    plan = make_plan(tmp_path, '["244.936GHz_CS"]', "nchunks = 7\n")       # 480 = 4 x 69 + 3 x 68
    sched = Scheduler(plan)
    [(worker, prepare)] = sched.assign([0])
    assert prepare.kind == "prepare" and sched.assign([1]) == []       # nothing else ready
    newly = sched.complete(prepare.id)
    assert len(newly) == 7
    costs = []
    while True:
        picks = sched.assign([0])
        if not picks or picks[0][1].kind != "chunk":
            break
        costs.append(picks[0][1].cost)
        sched.complete(picks[0][1].id)
    assert len(costs) == 7 and costs == sorted(costs, reverse=True) and costs[0] > costs[-1]
    assert sched.priority(plan.units[prepare.id].id) < sched.priority(CS + "/finalize")


def test_finalize_starts_while_other_chunks_still_run(tmp_path):
    plan = make_plan(tmp_path, extra='[spw."244.936GHz_CS"]\nnchunks = 2\n')
    for first in (False, True):
        sim = simulate_schedule(plan, 3, finish_images_first=first)
        start = {uid: s for uid, _, s, _ in sim.timeline}
        end = {uid: e for uid, _, _, e in sim.timeline}
        last_cont_chunk = max(end[u] for u in end if u.startswith(CONT + "/chunk"))
        assert start[CS + "/finalize"] < last_cont_chunk
        assert start[CS + "/qa"] < last_cont_chunk
        assert sim.lower_bound <= sim.tight_lower_bound <= sim.makespan + 1e-6
    # finishing first: the beam the moment the last chunk is done, the concats the moment the
    # last post is done, finalize the moment the last concat is done, products right after
    assert start[CS + "/beam"] == pytest.approx(max(end[u] for u in end if u.startswith(CS + "/chunk")))
    assert min(start[u] for u in start if u.startswith(CS + "/post")) == pytest.approx(end[CS + "/beam"])
    assert min(start[u] for u in start if u.startswith(CS + "/concat")) == \
        pytest.approx(max(end[u] for u in end if u.startswith(CS + "/post")))
    assert start[CS + "/finalize"] == pytest.approx(max(end[u] for u in end if u.startswith(CS + "/concat")))
    assert start[CS + "/moments"] == pytest.approx(end[CS + "/finalize"])


def test_memory_budget_per_node_is_never_exceeded(tmp_path):
    plan = make_plan(tmp_path, '["246.700GHz_cont"]', "nchunks = 8\n")     # equal chunks
    chunk_mem = max(u.mem_gb for u in plan.units.values())
    budget = 2.2 * chunk_mem                              # two units per node at most
    per_node = 4
    sim = simulate_schedule(plan, 8, workers_per_node=per_node, node_memory_gb=budget)
    mem = {uid: u.mem_gb for uid, u in plan.units.items()}
    for node in range(2):
        peak = overlapping(sim.timeline, lambda uid, w: mem[uid] if w // per_node == node else 0)
        assert peak <= budget + 1e-9
        chunks_on_node = overlapping(sim.timeline, lambda uid, w: 1 if w // per_node == node and "/chunk" in uid
                                     else 0)
        assert chunks_on_node == 2
    unlimited = simulate_schedule(plan, 8, workers_per_node=per_node)
    assert unlimited.makespan < sim.makespan
    assert overlapping(unlimited.timeline, lambda uid, w: 1 if w < per_node and "/chunk" in uid else 0) == 4


def test_unit_bigger_than_the_budget_runs_alone(tmp_path):
    plan = make_plan(tmp_path, '["244.936GHz_CS"]', "nchunks = 3\n")
    smallest = min(u.mem_gb for u in plan.units.values())
    sim = simulate_schedule(plan, 4, node_memory_gb=smallest * 0.5)
    assert sim.makespan == pytest.approx(plan.total_cost)      # all alone: serial
    assert overlapping(sim.timeline, lambda uid, w: 1) == 1


def test_prepare_reports_more_chunks_than_predicted(tmp_path):
    plan = make_plan(tmp_path, '["244.936GHz_CS"]', "nchunks = 2\n")
    sim = simulate_schedule(plan, 3, actual_nchunks={CS + "/prepare": 5})
    ids = [uid for uid, *_ in sim.timeline]
    assert [u for u in ids if "/chunk" in u] and sorted(u for u in ids if "/chunk" in u) == \
        [f"{CS}/chunk{i:02d}" for i in range(5)]
    end = {uid: e for uid, _, _, e in sim.timeline}
    start = {uid: s for uid, _, s, _ in sim.timeline}
    assert start[CS + "/finalize"] >= max(end[f"{CS}/chunk{i:02d}"] for i in range(5)) - 1e-9
    assert plan.nchunks(plan.keys[0]) == 2                     # the simulation worked on a copy


def test_scheduler_expansion_fail_retry_and_blocking(tmp_path):
    plan = make_plan(tmp_path, '["244.936GHz_CS"]', "nchunks = 2\n")
    sched = Scheduler(plan, nodes={1: "a", 2: "a"})
    [(w, prep)] = sched.assign([1, 2])
    newly = sched.complete(prep.id, nchunks=3)                 # graph grows in place
    assert sorted(newly) == [f"{CS}/chunk{i:02d}" for i in range(3)]
    assert plan.nchunks(plan.keys[0]) == 3
    picks = sched.assign([1, 2])
    assert len(picks) == 2 and set(sched.running) == {1, 2}
    first, second = picks[0][1].id, picks[1][1].id
    sched.fail(first, retry=True)                              # back to ready
    assert first in sched.ready_ids() and 1 not in sched.running
    sched.fail(second, retry=False)                            # dead: beam, posts, finalize, products blocked
    posts = [uid for uid, u in plan.units.items() if u.kind in ("post", "concat")]
    assert posts and sched.blocked_ids() == sorted([CS + "/beam", CS + "/finalize", CS + "/moments", CS + "/qa",
                                                    *posts])
    while not sched.finished:
        for _, unit in sched.assign([1, 2]):
            sched.complete(unit.id)
    assert sched.done == {prep.id} | {f"{CS}/chunk{i:02d}" for i in range(3)} - {second}
    assert sched.remaining_cost() == 0.0


def test_resume_with_done_units(tmp_path):
    plan = make_plan(tmp_path, '["244.936GHz_CS"]', "nchunks = 2\n")
    done = {CS + "/prepare", CS + "/chunk00"}
    sched = Scheduler(plan, done=done)
    assert sched.ready_ids() == [CS + "/chunk01"]
    [(_, unit)] = sched.assign([0])
    assert sched.complete(unit.id) == [CS + "/beam"]


def test_simulation_is_deterministic_and_bounded(tmp_path):
    plan = make_plan(tmp_path, '"all"', "nchunks = 3\n")
    a, b = simulate_schedule(plan, 5), simulate_schedule(plan, 5)
    assert a.timeline == b.timeline and a.makespan == b.makespan
    assert max(a.critical_path_cost, a.total_cost / 5) == pytest.approx(a.lower_bound)
    assert a.lower_bound <= image_lower_bound(plan, 5) <= a.makespan + 1e-6
    assert 0 < a.efficiency <= 1.0 and a.balance >= 1.0
    more = simulate_schedule(plan, 20)
    assert more.makespan < a.makespan


# --------------------------------------------------------------------------- idle workers, rank-0 work

def _sorted_every_call(sched: Scheduler, free, nodes) -> list:
    """The assignment rule written out naively (every free worker sorted by str per call),
    for one call: which worker each of the top ready units would go to (unlimited memory)."""
    order = sorted(set(free) - set(sched.running), key=str)
    by_node: dict = {}
    for w in order:
        by_node.setdefault(nodes.get(w, "local"), []).append(w)
    out = []
    for uid in sched.ready_ids():
        if not by_node:
            break
        node = min(by_node)
        out.append((by_node[node].pop(0), uid))
        if not by_node[node]:
            del by_node[node]
    return out


def test_assign_takes_idle_workers_in_a_fixed_order(tmp_path):
    """Idle workers wait in per-node heaps: per node the smallest str first ("10" before
    "2"), the nodes by name; a worker whose unit finished is idle again; only offered
    workers are used when a list is given. Same picks as sorting every call."""
    plan = make_plan(tmp_path, '["244.936GHz_CS", "246.700GHz_cont"]', "nchunks = 6\n")
    nodes = {w: ("b" if w % 3 else "a") for w in (2, 10, 3, 21, 7, 30)}
    sched = Scheduler(plan, nodes=nodes)
    twin = Scheduler(plan.copy(), nodes=nodes)
    picks = sched.assign()                                     # every idle worker it knows
    assert [w for w, _ in picks] == [21, 3]                    # two prepares; node a first, "21" < "3" < "30"
    assert [(w, u.id) for w, u in twin.assign(list(nodes))] == [(w, u.id) for w, u in picks]
    for s in (sched, twin):
        for _, unit in picks:
            s.complete(unit.id)
    expected = _sorted_every_call(sched, [10, 2, 7, 3], nodes)
    got = sched.assign([10, 2, 7, 3])                          # only these, though 21 and 30 are idle too
    assert [(w, u.id) for w, u in got] == expected and {w for w, _ in got} == {10, 2, 7, 3}
    assert set(sched.running) == {10, 2, 7, 3} and sched.assign([2]) == []
    sched.complete(got[0][1].id)                               # its worker is idle again
    assert got[0][0] not in sched.running
    assert [w for w, _ in sched.assign([got[0][0]])] == [got[0][0]]
    twin_got = twin.assign([10, 2, 7, 3])
    assert [(w, u.id) for w, u in twin_got] == expected        # deterministic


def test_expansion_updates_only_its_image(tmp_path):
    """A prepare that re-shapes its image leaves every other unit's priority and
    readiness as they were, and gives what a scheduler built afresh would have."""
    plan = make_plan(tmp_path, extra="nchunks = 4\n")
    sched = Scheduler(plan)
    for _, unit in sched.assign([0, 1]):
        sched.complete(unit.id, nchunks=7 if unit.id == CS + "/prepare" else None)
    fresh = Scheduler(plan.copy(), done=set(sched.done))
    assert sched.ready_ids() == fresh.ready_ids()
    assert {u: sched.priority(u) for u in plan.units} == {u: fresh.priority(u) for u in plan.units}
    assert plan.nchunks(plan.keys[0]) == 7 and plan.nchunks(plan.keys[1]) == 4


def test_simulation_reports_the_policy_time(tmp_path):
    plan = make_plan(tmp_path)
    sim = simulate_schedule(plan, 4, timeline=False)
    assert sim.policy_s > 0 and sim.timeline == []
