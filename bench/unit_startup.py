"""Unit start-up to the first CASA call, cold vs warm, side by side (issue 12 item 7).

    .venv/bin/python bench/unit_startup.py [--units 10] [--no-imaging] [--workdir DIR] [--keep]

Both ways go through the real worker code (:class:`faust_hpc.launcher.worker.
WorkerContext` / ``RunningUnit``: task file, child process, result file,
manifest records), one worker, one unit at a time:

- ``--units`` trivial units each way, whose executor (:func:`first_casa_call`)
  notes when it was entered and when its first casatools call
  (``casa_env.casatools().quanta()``) returned. Start-up = that moment minus
  the moment the worker began starting the unit. Cold: a fresh
  ``python -m faust_hpc.launcher.unit_child`` per unit; warm: a child forked
  by the worker's fork server (whose one-time preload, per worker, is
  reported apart);
- one real imaging unit each way (the prepare and the first chunk of one
  narrow SPW of the tiny simulated data, each in its own product directory),
  through :func:`timed_imaging_unit`, which records the first casatools and
  casatasks calls of the real executor.

Prints a table and ends with one JSON line (absolute figures and warm/cold
ratios; goal: warm start-up < 0.3 s).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faust_hpc.execute  # noqa: F401 - so that a fork server preloading this module has the imaging code too

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 0.3
LABEL = "244.936GHz_CS"


# ---------------------------------------------------------------------------- executors (run in the unit child)
def first_casa_call(spec: Any, unit: Any, workdir: Path) -> dict:
    """A trivial unit: one casatools call, timed."""
    entered = time.time()
    from faust_hpc import casa_env

    casa_env.casatools().quanta().quantity(1.0, "GHz")
    return {"outputs": [], "info": {"executor_at": entered, "first_casa_call_at": time.time()}}


def timed_imaging_unit(spec: Any, unit: Any, workdir: Path) -> Any:
    """The real imaging executor, noting when its first casatools and casatasks calls returned."""
    entered = time.time()
    from faust_hpc import casa_env, execute

    seen: dict[str, float] = {}

    def timed(name: str, door: Any) -> Any:
        def call() -> Any:
            module = door()
            seen.setdefault(name, time.time())
            return module
        return call

    casa_env.casatools = timed("first_casa_call_at", casa_env.casatools)
    casa_env.casatasks = timed("casatasks_at", casa_env.casatasks)
    result = execute.run_unit(spec, unit, workdir)
    result.info.update(executor_at=entered, **seen)
    return result


# ---------------------------------------------------------------------------- driver
def _runfile(root: Path, executor: str) -> Path:
    """The launcher tests' cheap-unit run file, with ``executor``."""
    from tests.launcher_helpers import write_run

    runfile, _env = write_run(root, nchunks={LABEL: 2}, spws=(LABEL,))
    runfile.write_text(runfile.read_text().replace('"tests.units_cheap:run_unit"', f'"{executor}"'))
    return runfile


def _context(spec: Any, executor: str, warm: bool) -> Any:
    from faust_hpc.launcher.worker import WorkerContext

    return WorkerContext(spec, spec.path, 1, 1, executor, 0, import_root=str(REPO), warm_start=warm)


def _run_units(ctx: Any, units: list[Any], first_attempt: int = 1) -> list[dict]:
    rows = []
    for i, unit in enumerate(units):
        running = ctx.start(unit, first_attempt + i)
        outcome = running.wait()
        if outcome.status != "done":
            raise RuntimeError(f"{unit.id} ({running.start_mode}): {outcome.error}; see {outcome.out}")
        info = outcome.info
        rows.append({"unit": unit.id, "mode": running.start_mode,
                     "to_executor_s": info["executor_at"] - running.t0,
                     "to_first_casa_call_s": info["first_casa_call_at"] - running.t0,
                     "to_casatasks_s": info["casatasks_at"] - running.t0 if "casatasks_at" in info else None,
                     "unit_wall_s": outcome.elapsed})
    return rows


def _memory_mb(pid: int) -> dict[str, float] | None:
    """The fork server's memory: resident, proportional share, and its own (anonymous) pages."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return None
    kb = {parts[0].rstrip(":"): int(parts[1]) for parts in (ln.split() for ln in lines) if len(parts) == 3}
    return {name.lower(): round(kb.get(name, 0) / 1024, 1) for name in ("Rss", "Pss", "Pss_Anon")}


def trivial_units(workdir: Path, n: int) -> dict[str, Any]:
    from faust_hpc.plan import build_plan
    from faust_hpc.runfile import load_runfile

    out: dict[str, Any] = {}
    for mode in ("cold", "warm"):
        spec = load_runfile(_runfile(workdir / f"trivial-{mode}", "bench.unit_startup:first_casa_call"))
        unit = next(u for u in build_plan(spec).units.values() if u.kind == "prepare")
        ctx = _context(spec, spec.scheduler.executor, mode == "warm")
        t0 = time.time()
        ready_s = None
        memory = None
        if ctx.forkserver is not None:
            ctx.forkserver.wait_ready()
            ready_s = time.time() - t0
            memory = _memory_mb(ctx.forkserver.pid)
        rows = _run_units(ctx, [unit] * n)
        ctx.close()
        if {r["mode"] for r in rows} != {mode}:
            raise RuntimeError(f"asked for {mode} starts, got {sorted({r['mode'] for r in rows})}")
        startup = [r["to_first_casa_call_s"] for r in rows]
        out[mode] = {"units": n, "median_s": statistics.median(startup), "min_s": min(startup),
                     "max_s": max(startup), "mean_s": statistics.fmean(startup),
                     "median_to_executor_s": statistics.median(r["to_executor_s"] for r in rows),
                     "median_unit_wall_s": statistics.median(r["unit_wall_s"] for r in rows),
                     "server_ready_s": ready_s, "server_memory_mb": memory}
    return out


def imaging_units(workdir: Path, sim_dir: Path | None) -> dict[str, Any]:
    from faust_hpc.plan import build_plan
    from faust_hpc.runfile import load_runfile
    from faust_hpc.simulate import SimResult
    from faust_hpc.simulate.runfiles import write_runfile_variant
    from tests.test_launcher_casa import IMAGING, SPW_SETTINGS  # the launcher's CASA test run, as small

    if sim_dir is None:
        sim_dir = workdir / "sim"
        subprocess.run([sys.executable, "-m", "faust_hpc", "simulate", str(sim_dir), "--size", "tiny",
                        "--spws", LABEL], check=True, cwd=workdir, capture_output=True)
    sim = SimResult.load(sim_dir)
    out: dict[str, Any] = {}
    for mode in ("cold", "warm"):
        runfile = write_runfile_variant(sim, workdir / f"imaging-{mode}" / "run.toml", imaging=IMAGING,
                                        spw=SPW_SETTINGS,
                                        scheduler={"executor": "bench.unit_startup:timed_imaging_unit"})
        spec = load_runfile(runfile)
        plan = build_plan(spec)
        units = [next(u for u in plan.units.values() if u.kind == kind) for kind in ("prepare", "chunk")]
        ctx = _context(spec, spec.scheduler.executor, mode == "warm")
        if ctx.forkserver is not None:
            ctx.forkserver.wait_ready()
        rows = _run_units(ctx, units)
        ctx.close()
        out[mode] = {r["unit"].rsplit("/", 1)[1]: {k: round(v, 3) for k, v in r.items()
                                                   if isinstance(v, float)} for r in rows}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=10, help="trivial units each way (default 10)")
    parser.add_argument("--no-imaging", action="store_true", help="skip the real imaging units")
    parser.add_argument("--sim", default=None, help="an existing tiny simulation (skip simulating)")
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.units < 1:
        parser.error(f"--units must be >= 1, got {args.units}")
    sys.path.insert(0, str(REPO))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="faust-bench-startup-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        trivial = trivial_units(workdir, args.units)
        imaging = None if args.no_imaging else imaging_units(workdir, Path(args.sim).resolve() if args.sim else None)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    cold, warm = trivial["cold"], trivial["warm"]
    print(f"{'trivial units':<16} {'n':>3} {'median s':>9} {'min s':>7} {'max s':>7} {'to executor s':>14}")
    for mode in ("cold", "warm"):
        r = trivial[mode]
        print(f"{mode:<16} {r['units']:>3} {r['median_s']:>9.3f} {r['min_s']:>7.3f} {r['max_s']:>7.3f} "
              f"{r['median_to_executor_s']:>14.3f}")
    print(f"fork server preload (once per worker): {warm['server_ready_s']:.2f} s; its memory (MB): "
          f"{warm['server_memory_mb']}")
    ratio = warm["median_s"] / cold["median_s"]
    print(f"warm/cold start-up to the first CASA call: {ratio:.3f} (cold/warm {1 / ratio:.1f}x); "
          f"goal warm < {GOAL_S} s: {'met' if warm['median_s'] < GOAL_S else 'NOT met'}")
    if imaging:
        for kind in imaging["cold"]:
            c, w = imaging["cold"][kind], imaging["warm"][kind]
            print(f"imaging {kind:<8} first CASA call cold {c['to_first_casa_call_s']:.3f} s, warm "
                  f"{w['to_first_casa_call_s']:.3f} s; casatasks ready cold {c.get('to_casatasks_s', 0):.3f} s, "
                  f"warm {w.get('to_casatasks_s', 0):.3f} s; unit wall cold {c['unit_wall_s']:.2f} s, "
                  f"warm {w['unit_wall_s']:.2f} s")
    print(json.dumps({"bench": "unit_startup", "load_average": round(os.getloadavg()[0], 2),
                      "trivial": {m: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                                  for m, r in trivial.items()},
                      "warm_over_cold": round(ratio, 4), "goal_s": GOAL_S,
                      "goal_met": warm["median_s"] < GOAL_S, "imaging": imaging}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
