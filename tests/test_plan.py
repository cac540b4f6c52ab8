"""The unit graph, its cost model, auto chunking, and `faust-hpc plan`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from faust_hpc import catalog, costmodel
from faust_hpc.geometry import geometry_for
from faust_hpc.imaging.chunking import split_channels  # the archive's chunk boundaries
from faust_hpc.plan import build_combined_plan, build_plan
from faust_hpc.runfile import load_runfile
from faust_hpc.scheduler import simulate_schedule
from faust_hpc.units import ImageKey

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("faust-hpc")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "faust_hpc"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120, cwd=cwd)


def spec_for(tmp_path: Path, setup: int, extra: str = "", name: str = "run.toml", arrays: str = '["joint"]'):
    path = tmp_path / name
    path.write_text(f'[run]\ndata_dir = "absent"\nproduct_dir = "products"\n'
                    f'[imaging]\nfields = ["CB68"]\nsetup = {setup}\narrays = {arrays}\n{extra}')
    return load_runfile(path, check_paths=False)


@pytest.fixture(scope="module")
def setup1_plan():
    return build_plan(load_runfile(CONFIGS / "setup1.toml", check_paths=False))


# --------------------------------------------------------------------------- graph

def test_setup1_graph_shape(setup1_plan):
    plan = setup1_plan
    # FAUST-size chunks each outweigh a unit's start-up: one post unit per chunk
    assert plan.count_by_group() == {"prepare": 13, "chunk": 12 * 4 + 40, "beam": 13, "post": 12 * 4 + 40,
                                     "concat": 13 * 9, "finalize": 13, "products": 26}
    assert not plan.data_available
    key = ImageKey("CB68", "233.796GHz_cont", "joint", "0.5")
    units = plan.units_of(key)
    assert [u.id for u in units[:2]] == ["CB68/233.796GHz_cont/joint/0.5/prepare",
                                         "CB68/233.796GHz_cont/joint/0.5/chunk00"]
    assert units[-3].id.endswith("/finalize") and [u.kind for u in units[-2:]] == ["moments", "qa"]
    chunks = [u for u in units if u.kind == "chunk"]
    assert len(chunks) == 40 and chunks[7].id == "CB68/233.796GHz_cont/joint/0.5/chunk07"
    assert all(c.deps == (key.unit_id("prepare"),) for c in chunks)
    assert plan.units[key.unit_id("beam")].deps == tuple(c.id for c in chunks)
    posts = [u for u in units if u.kind == "post"]
    assert all(p.deps == (key.unit_id("beam"),) for p in posts)
    concats = [u for u in units if u.kind == "concat"]
    assert [u.id.rsplit("/", 1)[1] for u in concats] == [f"concat{i:02d}" for i in range(9)]  # FAUST size: one each
    assert all(c.deps == tuple(p.id for p in posts) for c in concats)
    assert plan.units[key.unit_id("finalize")].deps == tuple(c.id for c in concats)
    assert plan.units[key.unit_id("qa")].deps == (key.unit_id("finalize"),)
    assert sum(dict(c.params)["nchan"] for c in chunks) == 3840
    assert [dict(c.params)["chan_start"] for c in chunks[:3]] == [0, 96, 192]
    assert all(u.cost > costmodel.UNIT_OVERHEAD_S and u.mem_gb > 0 for u in plan.units.values())


def test_critical_path_and_total(setup1_plan):
    plan = setup1_plan
    cost, path = plan.critical_path()
    assert [uid.rsplit("/", 1)[1] for uid in path][0] == "prepare"
    assert path[-1].rsplit("/", 1)[1] in ("moments", "qa")
    assert cost == pytest.approx(sum(plan.units[u].cost for u in path))
    key = plan.keys[-1]
    units = plan.units_of(key)
    chain = units[0].cost + max(u.cost for u in units if u.kind == "chunk") + \
        plan.units[key.unit_id("beam")].cost + max(u.cost for u in units if u.kind == "post") + \
        max(u.cost for u in units if u.kind == "concat") + plan.units[key.unit_id("finalize")].cost + max(plan.units[key.unit_id(k)].cost for k in ("moments", "qa"))
    assert cost >= chain * (1 - 1e-12)   # (summed in another order)
    assert plan.total_cost == pytest.approx(sum(u.cost for u in plan.units.values()))


def test_expand_replaces_predicted_chunks(setup1_plan):
    plan = setup1_plan.copy()
    key = plan.keys[0]
    prepare = key.unit_id("prepare")
    new = plan.expand(prepare, 7)
    assert [u.id.rsplit("/", 1)[1] for u in new] == [f"chunk{i:02d}" for i in range(7)]
    assert plan.nchunks(key) == 7
    assert plan.units[key.unit_id("beam")].deps == tuple(u.id for u in new)
    assert plan.count_by_group()["chunk"] == 88 - 4 + 7
    before = dict(plan.units)
    plan.expand(prepare, 7)                                   # idempotent
    assert plan.units == before
    wide = plan.expand(prepare, 120)
    assert wide[0].id.endswith("chunk000") and wide[-1].id.endswith("chunk119")
    assert setup1_plan.nchunks(key) == 4                      # the original is untouched
    list(plan.topological_order())
    with pytest.raises(ValueError):
        plan.expand(key.unit_id("finalize"), 3)


def test_nchunks_integer_and_per_spw(tmp_path):
    spec = spec_for(tmp_path, 2, 'nchunks = 6\n[spw."244.936GHz_CS"]\nnchunks = 2\n'
                                 '[spw."246.700GHz_cont"]\nnchunks = "default"\n')
    plan = build_plan(spec)
    counts = {k.label: plan.nchunks(k) for k in plan.keys}
    assert counts["244.936GHz_CS"] == 2 and counts["246.700GHz_cont"] == 40
    assert counts["243.916GHz_CH3OH"] == 6
    frozen = build_plan(spec, frozen_nchunks={"CB68/244.936GHz_CS/joint/0.5": 3})
    assert frozen.nchunks(ImageKey("CB68", "244.936GHz_CS", "joint", "0.5")) == 3


def test_velocity_window_and_geometry_overrides(tmp_path):
    spec = spec_for(tmp_path, 2, 'fullcube = false\nline_vwin = "10km/s"\ncell_arcsec = 0.1\nimsize = 128\n'
                                 'spws = ["244.936GHz_CS"]\n')
    plan = build_plan(spec)
    model = plan.models["CB68/244.936GHz_CS/joint/0.5"]
    assert model.nchan == catalog.get_spw("244.936GHz_CS").nchan_from_window("10km/s")
    assert model.npix == 128 * 128


def test_auto_chunking_balances_for_the_worker_hint(tmp_path):
    spec = spec_for(tmp_path, 1, 'nchunks = "auto"\n[scheduler]\nworkers = 24\n')
    plan = build_plan(spec)
    sim = simulate_schedule(plan, 24, timeline=False)
    # within 10 % of the best any schedule can do: total/P, or (the continuum cube's
    # concatenation + FITS being one step of ~5,000 s) the longest image chain
    assert sim.makespan <= 1.10 * max(sim.total_cost / 24, sim.tight_lower_bound)
    default = build_plan(spec_for(tmp_path, 1, name="d.toml"))
    assert sim.makespan < simulate_schedule(default, 24, timeline=False).makespan
    again = build_plan(spec)                                            # deterministic
    assert {k: again.nchunks(k) for k in again.keys} == {k: plan.nchunks(k) for k in plan.keys}


def test_auto_respects_memory_budget(tmp_path):
    text = ('nchunks = "auto"\nspws = ["93.176GHz_N2Hp"]\nfullcube = false\n'
            '[scheduler]\nworkers = 2\nnode_memory_gb = {}\n')
    free = build_plan(spec_for(tmp_path, 3, text.format(0), name="free.toml", arrays='["12m"]'))
    key = free.keys[0]
    biggest = max(u.mem_gb for u in free.units.values() if u.kind == "chunk")
    budget = round(biggest * 0.85, 2)
    plan = build_plan(spec_for(tmp_path, 3, text.format(budget), arrays='["12m"]'))
    assert plan.nchunks(key) > free.nchunks(key)
    assert all(u.mem_gb <= budget for u in plan.units.values() if u.kind == "chunk")


def test_combined_field_plan(tmp_path):
    specs = [spec_for(tmp_path, 1, name="s1.toml"), spec_for(tmp_path, 2, name="s2.toml"),
             spec_for(tmp_path, 3, name="s3.toml", arrays='["12m"]')]
    plan = build_combined_plan(specs)
    assert len(plan.keys) == 33
    assert plan.count_by_group()["chunk"] == 2 * (12 * 4 + 40) + 6 * 20 + 80
    with pytest.raises(ValueError):
        build_combined_plan([specs[0], specs[0]])


# --------------------------------------------------------------------------- cost model

def _model(label: str, array: str = "joint", **kw) -> costmodel.ImageModel:
    spw = catalog.get_spw(label)
    geo = geometry_for("CB68", spw.setup, array)
    return costmodel.image_model(spw.setup, spw, geo, array, nchan=spw.nchan, **kw)


@pytest.mark.parametrize("narrow, cont, array", [
    ("216.113GHz_DCOp", "233.796GHz_cont", "joint"),
    ("244.936GHz_CS", "246.700GHz_cont", "joint"),
    ("93.176GHz_N2Hp", "95.000GHz_cont", "12m"),
])
def test_continuum_chunks_are_heavier_from_the_model(narrow, cont, array):
    n, c = _model(narrow, array), _model(cont, array)
    n_chunk = costmodel.chunk_sizes(n.nchan, catalog.default_nchunks(catalog.get_spw(narrow)))[0]
    c_chunk = costmodel.chunk_sizes(c.nchan, catalog.default_nchunks(catalog.get_spw(cont)))[0]
    assert costmodel.chunk_estimate(c, c_chunk).cost > costmodel.chunk_estimate(n, n_chunk).cost
    # the reasons, not a special case: more lines per chunk, higher S/N per (wider) channel
    assert c.emission_probability(c_chunk) > n.emission_probability(n_chunk)
    assert c.snr > n.snr and c.major_cycles(3.0) > n.major_cycles(3.0)
    # per channel, too
    assert costmodel.chunk_estimate(c, 8).cost > costmodel.chunk_estimate(n, 8).cost


def test_cost_model_calibration_on_the_reference_runs():
    """480 px joint mosaic, 62 channels, the reference simulation's few rows:
    dirty ~8 s, one clean with ~6 major cycles ~120 s, imsmooth ~19 s."""
    rows = 15 * 903 + 30 * 45        # 12m 15 x 60 s, 7m 30 x 60 s integrations
    m = costmodel.ImageModel(setup=2, nchan=62, npix=480 * 480, rows=rows, gridder="mosaic",
                             chan_spacing_hz=141e3, chan_width_hz=141e3, bandwidth_hz=62 * 141e3,
                             restfreq_hz=245e9, nscales=3)
    assert 62 * m.cycle_s == pytest.approx(8.0, rel=0.2)
    per_cycle = m.cycle_s + costmodel.K_AUTOMASK * m.npix + \
        costmodel.K_MINOR * m.npix * (costmodel.REFERENCE_SNR / costmodel.REFERENCE_SNR)
    assert 62 * 6 * per_cycle == pytest.approx(120.0, rel=0.2)
    fin = costmodel.finalize_estimate(m).cost - costmodel.UNIT_OVERHEAD_S
    assert fin == pytest.approx(19.0 * 1.1, rel=0.25)


def test_cost_and_memory_grow_with_size():
    m = _model("244.936GHz_CS")
    small, big = costmodel.chunk_estimate(m, 10), costmodel.chunk_estimate(m, 100)
    assert big.cost > small.cost and big.mem_gb > small.mem_gb
    assert _model("93.176GHz_N2Hp", "12m").npix > m.npix
    assert costmodel.chunk_estimate(_model("93.176GHz_N2Hp", "12m"), 10).mem_gb > small.mem_gb
    assert costmodel.nominal_rows_per_channel(1, "joint") > costmodel.nominal_rows_per_channel(1, "12m") \
        > costmodel.nominal_rows_per_channel(1, "7m")
    with_rows = _model("244.936GHz_CS", rows=10.0)
    assert costmodel.chunk_estimate(with_rows, 10).cost < small.cost
    # the imaging's split (remainder on the last chunks), clamped to one channel per chunk
    assert costmodel.chunk_sizes(10, 3) == [3, 3, 4] and costmodel.chunk_sizes(2, 5) == [1, 1]
    assert costmodel.chunk_sizes(10, 3) == [n for _, n in split_channels(10, 3)]


# --------------------------------------------------------------------------- CLI

def test_plan_cli_json_setup1():
    proc = cli("plan", str(CONFIGS / "setup1.toml"), "--ranks", "8,64", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["units_by_kind"] == {"prepare": 13, "chunk": 88, "beam": 13, "post": 88, "concat": 13 * 9,
                                    "finalize": 13, "products": 26}
    assert len(out["spws"]) == 13 and {s["field"] for s in out["spws"]} == {"CB68"}
    assert sum(s["nchunks"] for s in out["spws"]) == 88
    assert set(out["spws"][0]) >= {"field", "label", "nchunks", "cost"}
    assert set(out["makespan"]) == set(out["lower_bound"]) == {"8", "64"}
    assert out["workers"] == {"8": 7, "64": 63}
    for n in ("8", "64"):
        assert out["lower_bound"][n] <= out["makespan"][n] <= out["total_cost"]
        assert out["lower_bound"][n] >= max(out["critical_path_cost"], out["total_cost"] / out["workers"][n]) - 1
    assert out["catalog_only"] is True
    assert out["total_cost"] == pytest.approx(sum(s["cost"] for s in out["spws"]), rel=1e-6)


def test_plan_cli_text_says_catalog_alone(tmp_path):
    proc = cli("plan", str(CONFIGS / "setup3.toml"), "--ranks", "1,16")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "planning from the catalog alone" in text
    assert "units: 7 prepare" in text and "critical path:" in text and "total cost:" in text
    assert "lower bound" in text and "predicted makespan" in text


def test_plan_cli_rank_parsing():
    from faust_hpc.cli.plan_cmd import parse_ranks
    from faust_hpc.errors import UserInputError

    assert parse_ranks("64,8,8") == [8, 64]
    for bad in ("x", "0", ""):
        with pytest.raises(UserInputError, match="--ranks"):
            parse_ranks(bad)


def test_plan_summary_with_data_present(tmp_path):
    from faust_hpc.cli.plan_cmd import render_text, summarize

    (tmp_path / "data" / "CB68-Setup2").mkdir(parents=True)
    path = tmp_path / "run.toml"
    path.write_text('[run]\ndata_dir = "data"\nproduct_dir = "products"\n[imaging]\nfields = ["CB68"]\n'
                    'setup = 2\nspws = ["244.936GHz_CS"]\nnchunks = "auto"\n[scheduler]\nworkers = 3\n')
    spec = load_runfile(path)
    summary = summarize(spec, [1, 4])
    assert summary["catalog_only"] is False and summary["workers"] == {"1": 1, "4": 3}
    assert summary["makespan"]["1"] == pytest.approx(summary["total_cost"], rel=1e-6)
    text = render_text(summary, spec)
    assert "catalog alone" not in text and 'nchunks = "auto"' in text
    assert not (tmp_path / "products").exists()


# --------------------------------------------------------------------------- index by image, rank-0 work

def _graph_of(plan):
    """What a plan's derived structures say, in a comparable form."""
    succ = {uid: sorted(s) for uid, s in plan.successors().items() if uid in plan.units}
    return ({k.path: [u.id for u in plan.units_of(k)] for k in plan.keys}, plan.chunk_counts(), succ,
            dict(sorted(plan.bottom_levels().items())), plan.critical_path(), plan.total_cost)


def test_index_after_expand_matches_a_build_from_scratch(tmp_path):
    spec = spec_for(tmp_path, 2, 'weightings = [0.5, "natural"]\n')
    plan = build_plan(spec)
    plan.bottom_levels()                                        # cached: expand must keep them up to date
    counts = plan.chunk_counts()
    for i, key in enumerate(plan.keys[::3]):
        counts[key.path] = [7, 1, 120, 3][i % 4]
        plan.expand(key.unit_id("prepare"), counts[key.path])
        copy = plan.copy()                                      # a copy carries the index and is independent
    plan.expand(plan.keys[0].unit_id("prepare"), 5)
    counts[plan.keys[0].path] = 5
    fresh = build_plan(spec, frozen_nchunks=counts)
    assert _graph_of(plan) == _graph_of(fresh)
    assert set(plan.units) == set(fresh.units)
    assert all(plan.units[u] == fresh.units[u] for u in fresh.units if not u.endswith("/prepare"))  # (its prediction)
    assert copy.nchunks(plan.keys[0]) != 5 and _graph_of(copy) != _graph_of(plan)
    assert plan.topological_order() and len(plan.topological_order()) == len(plan.units)


def test_replace_image_is_generic_over_kinds(tmp_path):
    """The index upkeep does not know which kinds an image has: any re-shaping of one
    image gives the graph a plan of those units built from scratch would have."""
    from dataclasses import replace

    from faust_hpc.plan import Plan

    plan = build_plan(spec_for(tmp_path, 2, 'spws = ["244.936GHz_CS", "246.700GHz_cont"]\n'))
    plan.successors(), plan.bottom_levels()
    key = plan.keys[1]
    units = plan.units_of(key)
    finalize = next(u for u in units if u.kind == "finalize")
    # drop the QA unit, make moments wait on the chunks too and cost more
    image = [u for u in units if u.kind != "qa"]
    image = [replace(u, deps=u.deps + tuple(c.id for c in units if c.kind == "chunk"), cost=u.cost * 3)
             if u.kind == "moments" else u for u in image]
    plan.replace_image(key, image)
    fresh = Plan({u.id: u for k in plan.keys for u in (image if k == key else plan.units_of(k))},
                 dict(plan.models), list(plan.keys))
    assert _graph_of(plan) == _graph_of(fresh)
    assert key.unit_id("qa") not in plan.units and key.unit_id("qa") not in plan.successors()
    assert key.unit_id("moments") in plan.last_changed and finalize.id in plan.last_changed


def test_planned_nchunks_and_apply_done_prepares(tmp_path):
    from faust_hpc.run.frozen import planned_nchunks
    from faust_hpc.run.manifest import UnitState
    from faust_hpc.run.records import UnitStatus
    from faust_hpc.run.resume import apply_done_prepares

    plan = build_plan(spec_for(tmp_path, 1))
    assert planned_nchunks(plan) == {k.path: plan.nchunks(k) for k in plan.keys}
    key, other = plan.keys[0], plan.keys[1]
    states = {key.unit_id("prepare"): UnitState(key.unit_id("prepare"), UnitStatus.DONE, info={"nchunks": 9}),
              other.unit_id("prepare"): UnitState(other.unit_id("prepare"), UnitStatus.RUNNING,
                                                  info={"nchunks": 2})}
    apply_done_prepares(plan, states)
    assert planned_nchunks(plan)[key.path] == 9 and plan.nchunks(other) == 4


def test_auto_planning_stops_when_the_critical_path_binds(tmp_path, monkeypatch):
    """Hundreds of workers on one field's Setup 3: the chain prepare -> chunk -> finalize
    binds long before chunks get overhead-dominated. Auto planning stops doubling there,
    and never simulates the same chunk counts twice."""
    from faust_hpc import plan as plan_mod

    seen: list[tuple[int, float, float, float]] = []
    real = plan_mod.simulate_schedule

    def counting(plan, workers, **kw):
        sim = real(plan, workers, **kw)
        seen.append((len(plan.units), sim.makespan, sim.tight_lower_bound, sim.total_cost / workers))
        return sim

    monkeypatch.setattr(plan_mod, "simulate_schedule", counting)
    plan = build_plan(spec_for(tmp_path, 3, 'nchunks = "auto"\n[scheduler]\nworkers = 512\n', arrays='["12m"]'))
    assert len({units for units, *_ in seen}) == len(seen)      # no identical candidate twice
    doublings = seen[:-2]                                       # then two refinements around the best
    (_, before, *_), (_, last, bound, work) = doublings[-2:]
    assert bound >= 1.01 * work                                 # the critical path binds ...
    assert before - last < plan_mod.AUTO_MAKESPAN_SLACK * before   # ... and doubling stopped paying
    # (not "worse twice": the last doubling paid, or the one before it was the best so far)
    assert last < before or before == min(m for _, m, *_ in doublings)
    # the overhead limit alone would have gone on doubling
    base = build_plan(spec_for(tmp_path, 3, name="d.toml", arrays='["12m"]')).total_cost
    assert base / (512 * 2 ** (len(doublings) - 1)) > plan_mod.AUTO_MIN_TARGET_OVERHEADS * costmodel.UNIT_OVERHEAD_S
    best = min(m for _, m, *_ in seen)
    assert simulate_schedule(plan, 512, timeline=False).makespan <= 1.01 * best + 1e-6


def test_program_plan_from_one_run_file(tmp_path):
    """The whole program (13 fields x 3 Setups) as one plan: a key per field and SPW, each
    with its Setup's array kind, one prepare each."""
    path = tmp_path / "program.toml"
    path.write_text((CONFIGS / "program.toml").read_text().replace('nchunks = "auto"', 'nchunks = "default"'))
    plan = build_plan(load_runfile(path, check_paths=False))
    assert plan.count_by_group()["prepare"] == 13 * 33 == len(plan.keys)
    assert plan.count_by_group()["chunk"] == 13 * (2 * (12 * 4 + 40) + 6 * 20 + 80)
    assert {k.array for k in plan.keys if catalog.get_spw(k.label).setup == 3} == {"12m"}
    assert {k.array for k in plan.keys if catalog.get_spw(k.label).setup != 3} == {"joint"}
