"""``faust-hpc image RUNFILE``: the whole pipeline serially in this process (no MPI).

For users without MPI or a cluster: the run file's units (prepare -> chunks
-> beam -> posts -> finalize -> moments, qa) run one after another through the launcher's
serial mode -- the same executor, unit children, manifest, resume and run
claim as ``faust-hpc run`` -- so the products are identical to an MPI run's,
and an interrupted ``image`` resumes where it stopped. Each unit's CASA log is
``<product_dir>/logs/<unit>.attempt<N>.casa.log``; its CASA scratch files go
to ``<product_dir>/work/<unit>``.
"""
from __future__ import annotations

import argparse
import logging
import time

HELP = "run the imaging pipeline for a run file in this process (serial, no MPI)"

log = logging.getLogger("faust_hpc.cli.image")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runfile", help="run file (TOML)")
    parser.add_argument("--no-products", action="store_true", help="skip the moments and QA units")
    parser.add_argument("--only", metavar="UNIT_ID_PREFIX", default=None,
                        help="run only units whose id starts with this (e.g. CB68/244.936GHz_CS)")
    parser.add_argument("--break-lock", action="store_true",
                        help="declare the run's other launchers dead now (their units are cleaned and redone); "
                             "refused while one runs on this host: for launchers that are surely gone "
                             "but whose lease has not run out yet")


def run(args: argparse.Namespace) -> int:
    from faust_hpc.errors import UserInputError
    from faust_hpc.launcher import run_serial
    from faust_hpc.layout import FINAL_FITS_EXT
    from faust_hpc.run.records import UnitStatus
    from faust_hpc.run.select import IMAGE_KINDS, PRODUCT_KINDS, Selection
    from faust_hpc.runfile import load_runfile

    spec = load_runfile(args.runfile, check_paths=True)
    keys = [k for k in spec.image_keys() if args.only is None or k.path.startswith(args.only)
            or args.only.startswith(k.path)]
    if not keys:
        raise UserInputError(f"--only {args.only!r} matches no image of {spec.path.name}; "
                             f"e.g. {spec.image_keys()[0].path}")
    # Bad input (every MS opens, holds the field and every SPW) is refused by the
    # launcher's input check before the run is claimed: nothing written.
    kinds = IMAGE_KINDS | (frozenset() if args.no_products else PRODUCT_KINDS)
    t0 = time.time()
    result = run_serial(spec, Selection(kinds=kinds, only=args.only), command="faust-hpc image",
                        break_lock=args.break_lock)
    states = result.manifest.states()
    for uid in result.units:
        st = states.get(uid)
        if uid.endswith("/finalize") and st is not None and st.status == UnitStatus.DONE:
            print(f"{uid}: {next((p for p in st.outputs if p.endswith(FINAL_FITS_EXT)), '')}")
    print(f"faust-hpc image: {len(keys)} image(s) in {time.time() - t0:.1f} s; products in {spec.product_dir}")
    return result.summary.exit_status
