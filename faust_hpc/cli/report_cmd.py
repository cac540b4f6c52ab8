"""``faust-hpc report RUNFILE``: timeline and cost table of a run, from its manifest."""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

HELP = "write a run report: timeline PNG and per-SPW table (Markdown, HTML) from the manifest"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runfile", help="the run file (TOML)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="write the report here (default: <product_dir>/report)")
    parser.add_argument("--format", choices=("md", "html", "both"), default="both",
                        help="table format(s) (default both)")


def _planned_units(runfile: str) -> list[str]:
    """The plan's unit ids (so units that never started count), if a plan can
    be built here; the report stands on the manifest alone otherwise."""
    try:
        from faust_hpc.run.view import load_view

        return sorted(load_view(runfile).plan.units)
    except Exception as exc:  # noqa: BLE001 - the plan is an optional refinement
        log.info("report without the plan (%s): units never started are not counted", exc)
        return []


def run(args: argparse.Namespace) -> int:
    from faust_hpc.products.report import make_report
    from faust_hpc.runfile import load_runfile

    spec = load_runfile(args.runfile, check_paths=False)
    formats = ("md", "html") if args.format == "both" else (args.format,)
    written = make_report(spec.product_dir, out_dir=args.out, title=f"faust-hpc run report: {spec.name}",
                          formats=formats, expected_units=_planned_units(args.runfile))
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0
