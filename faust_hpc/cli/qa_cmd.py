"""``faust-hpc qa RUNFILE``: QA channel maps of every final cube of a run (its qa units)."""
from __future__ import annotations

import argparse

HELP = "make QA channel-map plots (restored image and residual) of a run's final cubes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runfile", help="the run file (TOML)")
    parser.add_argument("--sigma", type=float, default=None, metavar="N",
                        help="plot channels whose peak exceeds N x rms (default 6)")
    parser.add_argument("--no-overwrite", action="store_true",
                        help="keep QA plots a unit already made (default: make them again)")


def run(args: argparse.Namespace) -> int:
    from faust_hpc.cli.product_units import run_product_units
    from faust_hpc.errors import UserInputError

    if args.sigma is not None and not args.sigma > 0:
        raise UserInputError(f"--sigma must be a positive number, got {args.sigma}")
    params = {"overwrite": not args.no_overwrite}
    if args.sigma is not None:
        params["plot_sigma"] = args.sigma
    return run_product_units(args.runfile, "qa", params, overwrite=not args.no_overwrite)
