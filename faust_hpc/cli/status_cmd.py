"""``faust-hpc status RUNFILE [--json]``: where a run stands, per SPW."""
from __future__ import annotations

import argparse
import json

HELP = "show a run's progress per SPW: done, running, failed, pending, elapsed, ETA"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runfile", help="the run file (TOML)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from faust_hpc.run.records import UnitStatus
    from faust_hpc.run.view import describe_divergence, fmt_duration, load_view, spw_rows

    view = load_view(args.runfile)
    rows = spw_rows(view)
    totals = {k: sum(r[k] for r in rows) for k in ("total", "done", "running", "failed", "pending")}
    failed = view.failed_units()
    for f in failed:   # what cannot run until this unit is done (a diverged chunk: its image's finalize, ...)
        f["blocked"] = sorted(u for u in view.dependents({f["unit"]}) - {f["unit"]}
                              if view.status_of(u) != UnitStatus.DONE)
    if args.json:
        print(json.dumps({"run": view.spec.name, "product_dir": str(view.spec.product_dir),
                          "live": view.live, "owner": view.owner, "totals": totals, "spws": rows,
                          "failed": failed}, indent=2))
        return 0
    state = (f"running (host {view.owner.get('host')} pid {view.owner.get('pid')})"
             if view.live and view.owner else "not running")
    print(f"run {view.spec.name}: {totals['done']}/{totals['total']} units done, {state}")
    header = f"{'image':<46} {'done':>5} {'run':>4} {'fail':>4} {'pend':>5} {'elapsed':>9} {'ETA':>9}"
    print(header)
    for r in rows:
        print(f"{r['image']:<46} {r['done']:>5} {r['running']:>4} {r['failed']:>4} {r['pending']:>5} "
              f"{fmt_duration(r['elapsed_s']) if r['elapsed_s'] is not None else '-':>9} "
              f"{fmt_duration(r['eta_s']) if r['eta_s'] is not None else '-':>9}")
    for f in failed:
        where = f"  traceback: {f['traceback']}" if f["traceback"] else (f"  log: {f['log']}" if f["log"] else "")
        if f["diverged"]:
            print(f"DIVERGED: {f['unit']} (attempt {f['attempt']}, flagged, not retried): "
                  f"{describe_divergence(f['diverged'])}{where}")
        else:
            print(f"failed: {f['unit']} (attempt {f['attempt']}): {f['error']}{where}")
        if f["blocked"]:
            print(f"  blocked by it: {', '.join(f['blocked'])}")
    return 0
