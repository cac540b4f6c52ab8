"""``faust-hpc`` command line: one module per subcommand.

Each module ``faust_hpc/cli/<name>.py`` defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. This file only wires them
together, sets up logging, and turns a :class:`UserInputError` into one line on
stderr and exit status 2 (before any work starts, by the layers' contract).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from typing import Sequence

from faust_hpc import __version__
from faust_hpc.errors import UserInputError

# Order is the order of `faust-hpc --help`.
SUBCOMMANDS = ("run", "plan", "status", "rerun", "image", "simulate", "demo", "prepare-real",
               "moments", "qa", "report", "slurm", "torque")


def _available() -> list[tuple[str, object]]:
    found = []
    for name in SUBCOMMANDS:
        modname = f"faust_hpc.cli.{name.replace('-', '_')}_cmd"
        if importlib.util.find_spec(modname) is not None:
            found.append((name, importlib.import_module(modname)))
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faust-hpc", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"faust-hpc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in _available():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args._run(args) or 0)
    except UserInputError as exc:
        print(f"faust-hpc: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("faust-hpc: interrupted", file=sys.stderr)
        return 130
