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
spread likewise + its largest concat + finalize + products).

Costs learned from earlier runs (:mod:`faust_hpc.costfit`, ``[scheduler]
learn_costs`` / ``learn_from``): the plan uses them, and on a product dir
with done units ``plan`` prints per unit kind what the model alone predicted,
what the learned model predicts and what the units took (median and total
seconds, count); ``--json`` has the same under ``learned_costs``.
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
    from faust_hpc import costfit
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
        runfile=str(spec.path), name=spec.name, setup=spec.setup if len(spec.setups) <= 1 else list(spec.setups),
        fields=list(spec.fields),
        data_available=data_available, catalog_only=not data_available,
        units_by_kind=plan.count_by_group(), units=len(plan.units),
        spws=spws, total_cost=round(plan.total_cost, 1),
        critical_path_cost=round(cp_cost, 1), critical_path=cp_ids,
        workers=workers, makespan=makespan, lower_bound=lower, image_lower_bound=tight,
        makespan_over_work_per_worker=balance,
        cost_unit="estimated seconds on the reference 2-core machine",
        learned_costs=costfit.compare(spec),
    )


def _setups_text(setup: int | list[int]) -> str:
    if isinstance(setup, list):
        return "Setups " + ", ".join(map(str, setup))
    return f"Setup {setup}" if setup else "no FAUST Setup"


def render_text(s: dict, spec) -> str:
    kinds = s["units_by_kind"]
    lines = [f"{spec.path.name}: run {s['name']!r}: {len(s['fields'])} field(s), {_setups_text(s['setup'])}, "
             f"{len(spec.spw_labels)} SPW(s), arrays {'/'.join(spec.arrays)}, "
             f"weightings {', '.join(str(w) for w in spec.weightings)}"]
    auto = [label for label in spec.spw_labels if spec.nchunks_for(label) == "auto"]
    if auto:
        lines.append(f'nchunks = "auto" ({len(auto)} SPW(s)) sized for {spec.scheduler.workers} workers '
                     f"([scheduler] workers); other rank counts below reuse these chunks")
        if s["learned_costs"]["fits"]:
            lines.append("  (learned costs change the chunk counts only of images whose counts a run has not "
                         "frozen in its manifest yet)")
    learned = s["learned_costs"]
    if learned["fits"] or learned["measured_sizes"]:
        lines.append(f"costs: learned from {learned['samples']} unit(s) of {len(learned['sources'])} earlier "
                     f"run(s) ({', '.join(learned['sources'])}): measured sizes of "
                     f"{len(learned['measured_sizes'])} image(s); {_fits_text(learned['fits'])}")
    elif s["catalog_only"]:
        lines.append(f"data_dir {spec.data_dir} is absent: planning from the catalog alone "
                     f"(nominal FAUST visibility counts)")
    else:
        lines.append("costs: catalog channel counts and nominal FAUST visibility counts (the prepare "
                     "units report the real chunk lists when the run starts)")
    lines.append(f"units: {kinds['prepare']} prepare, {kinds['chunk']} chunk, {kinds['beam']} beam, "
                 f"{kinds['post']} post, {kinds['concat']} concat, {kinds['finalize']} finalize, "
                 f"{kinds['products']} products "
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
    lines += _check_lines(learned)
    return "\n".join(lines)


def _fits_text(fits: dict) -> str:
    if not fits:
        return "the model's constants"
    return "seconds = " + "; ".join(f"{k}: {f['offset']:.1f} + {f['scale']:.3g} x work (n={f['n']})"
                                    for k, f in fits.items())


def _check_lines(learned: dict) -> list[str]:
    """Predicted (model / learned) vs actual per unit kind of this product dir."""
    by_kind = learned["by_kind"]
    if not by_kind:
        return []
    lines = ["", "this product dir's done units: predicted vs actual seconds (median / total)"
                 + ("" if learned["learn_costs"] else " (learn_costs = false: learned = model)"),
             f"  {'kind':<9}  {'units':>5}  {'model':>17}  {'learned':>17}  {'actual':>17}  "
             f"{'error model':>11}  {'error learned':>13}"]

    def cell(stats: dict) -> str:
        return f"{stats['median']:,.1f} / {stats['total']:,.0f}"

    for kind, row in by_kind.items():
        lines.append(f"  {kind:<9}  {row['count']:>5}  {cell(row['model']):>17}  {cell(row['learned']):>17}  "
                     f"{cell(row['actual']):>17}  {row['error_model']:>11.2f}  {row['error_learned']:>13.2f}")
    lines.append("  (error: mean |ln(predicted / actual)|; 0.69 = a factor 2 off)")
    return lines


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
