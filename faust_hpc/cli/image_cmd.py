"""``faust-hpc image RUNFILE``: the whole pipeline in this one process (no MPI).

For users without MPI or a cluster: every image key of the run file goes
through the same units the launcher would run (prepare -> chunks ->
finalize -> moments, qa), one after another, through the same executor, so
the products are identical to an MPI run's. CASA's log goes to
``<product_dir>/logs/image-<run name>.casa.log``; each unit's CASA scratch
files to ``<product_dir>/work/<unit id>``.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

HELP = "run the imaging pipeline for a run file in this process (serial, no MPI)"

log = logging.getLogger("faust_hpc.cli.image")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runfile", help="run file (TOML)")
    parser.add_argument("--no-products", action="store_true", help="skip the moments and QA units")
    parser.add_argument("--only", metavar="UNIT_ID_PREFIX", default=None,
                        help="run only units whose id starts with this (e.g. CB68/244.936GHz_CS)")


def unit_workdir(product_dir: Path, unit_id: str) -> Path:
    return Path(product_dir) / "work" / unit_id.replace("/", "__")


def run(args: argparse.Namespace) -> int:
    from faust_hpc import casa_env
    from faust_hpc.execute import config_for, run_unit
    from faust_hpc.inputs import check_measurement_sets
    from faust_hpc.launcher.worker import THREAD_VARS, thread_budget
    from faust_hpc.plan import build_plan
    from faust_hpc.runfile import load_runfile

    spec = load_runfile(args.runfile, check_paths=True)
    check_measurement_sets(spec)  # before the CASA log below creates <product_dir>/logs
    product_dir = Path(spec.product_dir)
    # The launcher's thread budget, set before CASA loads (OpenMP reads it once),
    # so this serial run's products are bit-identical to an MPI run's.
    threads = thread_budget(spec.scheduler.threads_per_unit, ranks_on_node=1)
    os.environ.update({var: str(threads) for var in THREAD_VARS})
    casa_log = product_dir / "logs" / f"image-{spec.name}.casa.log"
    casa_env.configure(spec.casa_data_dir, log_path=casa_log)
    keys = [k for k in spec.image_keys() if args.only is None or k.path.startswith(args.only)
            or args.only.startswith(k.path)]
    # Bad input before any work: every MS present, every SPW in every MS.
    for key in keys:
        config_for(spec, key).validate_inputs()
    # The same plan as `faust-hpc run` (chunk counts incl. "auto"), so a serial
    # run and an MPI run of one run file give the same chunks and products.
    plan = build_plan(spec)
    t_start = time.time()
    for key in keys:
        prepare = plan.units[key.unit_id("prepare")]
        t0 = time.time()
        result = run_unit(spec, prepare, unit_workdir(product_dir, prepare.id))
        n = int(result.info["nchunks"])
        print(f"{prepare.id}: {n} chunks ({time.time() - t0:.1f} s)")
        for unit in plan.expand(prepare.id, n):
            t0 = time.time()
            run_unit(spec, unit, unit_workdir(product_dir, unit.id))
            print(f"{unit.id}: done ({time.time() - t0:.1f} s)")
        t0 = time.time()
        fin = plan.units[key.unit_id("finalize")]
        result = run_unit(spec, fin, unit_workdir(product_dir, fin.id))
        fits = next((p for p in result.outputs if p.endswith(".fits")), "")
        print(f"{fin.id}: {fits} ({time.time() - t0:.1f} s)")
        if not args.no_products:
            for kind in ("moments", "qa"):
                unit = plan.units[key.unit_id(kind)]
                t0 = time.time()
                result = run_unit(spec, unit, unit_workdir(product_dir, unit.id))
                print(f"{unit.id}: {len(result.outputs)} files ({time.time() - t0:.1f} s)")
    print(f"faust-hpc image: {len(keys)} image(s) in {time.time() - t_start:.1f} s; products in {product_dir}")
    return 0
