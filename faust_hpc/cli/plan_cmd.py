"""``faust-hpc plan RUNFILE [--ranks 8,16,64] [--json]``: the unit graph and
its predicted run time, without running anything.

Ranks vs workers: under ``mpirun -n N`` rank 0 schedules and ranks 1..N-1
run units, so N ranks give N - 1 workers (one rank runs units serially on one
worker). The predicted makespan for N ranks is the scheduling policy of the
launcher (:mod:`faust_hpc.scheduler`) run under a simulated clock with that many
workers (how ranks share nodes is not known before ``mpirun`` starts, so the
prediction lets memory limit each unit, not how many run at once); the lower
bound is max(critical path, total work / workers) (the
JSON also has ``image_lower_bound``, which adds each image's own chain:
prepare + its chunk work spread over all workers + beam + its post work
spread likewise + finalize + products).
"""
from __future__ import annotations

import argparse
import json
from collections import OrderedDict

from faust_hpc.errors import UserInputError

HELP = "show the unit graph of a run file and its predicted makespan per rank count"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runfile", help="run file (TOML)")
    parser.add_argument("--ranks", default="8,16,64",
                        help="comma-separated MPI rank counts to predict (default: 8,16,64); "
                             "N ranks = N-1 workers + the scheduler rank")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def parse_ranks(text: str) -> list[int]:
    try:
        ranks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserInputError(f'--ranks: expected comma-separated integers such as "8,16,64", got "{text}"') from None
    if not ranks or any(r < 1 for r in ranks):
        raise UserInputError(f'--ranks: expected positive integers such as "8,16,64", got "{text}"')
    return sorted(set(ranks))


def _hours(seconds: float) -> str:
    return f"{seconds:,.0f} s ({seconds / 3600:.1f} h)"


def summarize(spec, ranks: list[int]) -> dict:
    """Everything ``plan`` prints, as plain data (also used by the JSON output)."""
    from faust_hpc.plan import build_plan
    from faust_hpc.scheduler import simulate_schedule, workers_for_ranks

    data_available = spec.data_dir.is_dir()
    plan = build_plan(spec, data_available=data_available)
    spws = []
    for key in plan.keys:
        units = plan.units_of(key)
        spws.append(OrderedDict(field=key.field, label=key.label, array=key.array, weighting=key.weighting,
                                nchunks=sum(1 for u in units if u.kind == "chunk"),
                                cost=round(sum(u.cost for u in units), 1)))
    cp_cost, cp_ids = plan.critical_path()
    makespan, lower, tight, workers, balance = {}, {}, {}, {}, {}
    for n in ranks:
        sim = simulate_schedule(plan, workers_for_ranks(n), timeline=False)
        makespan[str(n)] = round(sim.makespan, 1)
        lower[str(n)] = round(sim.lower_bound, 1)
        tight[str(n)] = round(sim.tight_lower_bound, 1)
        workers[str(n)] = sim.workers
        balance[str(n)] = round(sim.balance, 4)
    return OrderedDict(
        runfile=str(spec.path), name=spec.name, setup=spec.setup, fields=list(spec.fields),
        data_available=data_available, catalog_only=not data_available,
        units_by_kind=plan.count_by_group(), units=len(plan.units),
        spws=spws, total_cost=round(plan.total_cost, 1),
        critical_path_cost=round(cp_cost, 1), critical_path=cp_ids,
        workers=workers, makespan=makespan, lower_bound=lower, image_lower_bound=tight,
        makespan_over_work_per_worker=balance,
        cost_unit="estimated seconds on the reference 2-core machine",
    )


def render_text(s: dict, spec) -> str:
    kinds = s["units_by_kind"]
    lines = [f"{spec.path.name}: run {s['name']!r}: {len(s['fields'])} field(s), {'Setup ' + str(s['setup']) if s['setup'] else 'no FAUST Setup'}, "
             f"{len(spec.spw_labels)} SPW(s), arrays {'/'.join(spec.arrays)}, "
             f"weightings {', '.join(str(w) for w in spec.weightings)}"]
    auto = [label for label in spec.spw_labels if spec.nchunks_for(label) == "auto"]
    if auto:
        lines.append(f'nchunks = "auto" ({len(auto)} SPW(s)) sized for {spec.scheduler.workers} workers '
                     f"([scheduler] workers); other rank counts below reuse these chunks")
    if s["catalog_only"]:
        lines.append(f"data_dir {spec.data_dir} is absent: planning from the catalog alone "
                     f"(nominal FAUST visibility counts)")
    else:
        lines.append("costs: catalog channel counts and nominal FAUST visibility counts (the prepare "
                     "units report the real chunk lists when the run starts)")
    lines.append(f"units: {kinds['prepare']} prepare, {kinds['chunk']} chunk, {kinds['beam']} beam, "
                 f"{kinds['post']} post, {kinds['finalize']} finalize, {kinds['products']} products "
                 f"({s['units']} total)")
    lines.append(f"total cost: {_hours(s['total_cost'])} ({s['cost_unit']})")
    cp = s["critical_path"]
    short = " -> ".join([cp[0]] + [uid.rsplit("/", 1)[1] for uid in cp[1:]]) if cp else "-"
    lines.append(f"critical path: {_hours(s['critical_path_cost'])}: {short}")
    lines.append("")
    width = max(len(f"{x['field']} {x['label']}") for x in s["spws"]) if s["spws"] else 10
    lines.append(f"  {'image':<{width}}  {'array':>5}  {'wt':>7}  {'chunks':>6}  {'cost (s)':>12}")
    for x in s["spws"]:
        lines.append(f"  {x['field'] + ' ' + x['label']:<{width}}  {x['array']:>5}  {x['weighting']:>7}  "
                     f"{x['nchunks']:>6}  {x['cost']:>12,.0f}")
    lines.append("")
    lines.append(f"  {'ranks':>6}  {'workers':>7}  {'lower bound':>16}  {'predicted makespan':>20}  "
                 f"{'makespan/(work/workers)':>23}")
    for n, ms in s["makespan"].items():
        lines.append(f"  {n:>6}  {s['workers'][n]:>7}  {s['lower_bound'][n]:>14,.0f} s  {ms:>18,.0f} s  "
                     f"{s['makespan_over_work_per_worker'][n]:>23.3f}")
    lines.append("(N ranks = N-1 workers + the scheduler rank; 1 rank runs serially)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from faust_hpc.runfile import load_runfile

    ranks = parse_ranks(args.ranks)
    spec = load_runfile(args.runfile, check_paths=False)
    summary = summarize(spec, ranks)
    if args.json:
        print(json.dumps(summary))
    else:
        print(render_text(summary, spec))
    return 0
