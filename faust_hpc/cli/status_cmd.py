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
    launchers = view.launcher_rows()
    live = [ls for ls in launchers if ls["alive"]]
    if args.json:
        print(json.dumps({"run": view.spec.name, "product_dir": str(view.spec.product_dir),
                          "live": view.live, "launchers": launchers, "totals": totals, "spws": rows,
                          "failed": failed}, indent=2))
        return 0
    state = (f"running ({len(live)} launcher(s))" if live else "not running")
    print(f"run {view.spec.name}: {totals['done']}/{totals['total']} units done, {state}")
    for ls in launchers:
        if not ls["alive"] and ls["state"] == "finished":
            continue   # finished launchers are history; `faust-hpc report` has them
        job = f" job {ls['slurm_job']}" + (f"[{ls['slurm_array_task']}]" if ls["slurm_array_task"] else "") \
            if ls["slurm_job"] else ""
        units = f": {', '.join(ls['running'][:3])}{' ...' if len(ls['running']) > 3 else ''}" if ls["running"] else ""
        print(f"launcher {ls['state']:<7} host {ls['host']} pid {ls['pid']}{job}, {ls['workers']} worker(s), "
              f"lease renewed {fmt_duration(ls['lease_age_s'])} ago, {len(ls['running'])} running{units}")
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
