"""``faust-hpc moments RUNFILE``: moment maps of every final cube of a run (its moments units)."""
from __future__ import annotations

import argparse

HELP = "make moment maps (max, mom0, mom1, mom2 and errors) of a run's final cubes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runfile", help="the run file (TOML)")
    parser.add_argument("--vwin", type=float, default=None, metavar="KMS",
                        help="velocity half-window about vsys in km/s for every line (default: the run "
                             "file's moments_vwin_kms, else 5 km/s, 1.25 km/s for CCH)")
    parser.add_argument("--no-overwrite", action="store_true",
                        help="keep moment maps a unit already made (default: make them again)")


def run(args: argparse.Namespace) -> int:
    from faust_hpc.cli.product_units import run_product_units
    from faust_hpc.errors import UserInputError

    if args.vwin is not None and not args.vwin > 0:
        raise UserInputError(f"--vwin must be a positive number of km/s, got {args.vwin}")
    params = {"overwrite": not args.no_overwrite}
    if args.vwin is not None:
        params["vwin"] = args.vwin
    return run_product_units(args.runfile, "moments", params, overwrite=not args.no_overwrite)
