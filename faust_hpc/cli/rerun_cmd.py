"""``faust-hpc rerun RUNFILE --spw LABEL [--channel N | --chunk K]``.

The documented restart-one-chunk workflow in batch form; what is invalidated
and how is :mod:`faust_hpc.run.invalidate`.
"""
from __future__ import annotations

import argparse

HELP = "invalidate units of one SPW (all, one chunk, or the chunk of one channel) so the next run redoes them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runfile", help="the run file (TOML)")
    parser.add_argument("--spw", required=True, metavar="LABEL", help="SPW label, e.g. 244.936GHz_CS")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--channel", type=int, metavar="N", help="redo the chunk holding channel N (0-based)")
    which.add_argument("--chunk", type=int, metavar="K", help="redo chunk K (0-based)")
    parser.add_argument("--field", help="only this field (default: every field of the run)")
    parser.add_argument("--array", help="only this array kind (default: all of the run)")
    parser.add_argument("--weighting", help="only this weighting, as in unit ids, e.g. 0.5 (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be invalidated, change nothing")


def run(args: argparse.Namespace) -> int:
    from faust_hpc.errors import UserInputError
    from faust_hpc.run.invalidate import invalidate, select_units
    from faust_hpc.run.view import load_view

    view = load_view(args.runfile)
    if not view.states:  # nothing ran: there is nothing to redo, and no manifest to start here
        raise UserInputError(f"{args.runfile}: this run has not started (no unit recorded in "
                             f"{view.manifest.path}); `faust-hpc run {args.runfile}` runs every unit")
    chosen = select_units(view, args.spw, field=args.field, array=args.array, weighting=args.weighting,
                          chunk=args.chunk, channel=args.channel)
    if args.dry_run:
        for uid in chosen:
            print(f"would invalidate {uid}")
        return 0
    invalidate(view, chosen)
    for uid in chosen:
        print(f"invalidated {uid}")
    print(f"{len(chosen)} unit(s) will be redone by the next `faust-hpc run {args.runfile}`")
    return 0
