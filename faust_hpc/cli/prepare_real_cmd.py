"""``faust-hpc prepare-real DIR``: calibrate the VLA NGC 5921 HI data from casadata."""
from __future__ import annotations

import argparse

HELP = "calibrate and continuum-subtract the VLA NGC 5921 HI data shipped in casadata (real data)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR",
                        help="output directory (data/N5921_2_hi_contsub.ms, ngc5921.json); reused when complete")


def run(args: argparse.Namespace) -> int:
    from faust_hpc.realdata.ngc5921 import load_ngc5921_record, prepare_ngc5921

    ms = prepare_ngc5921(args.directory)
    record = load_ngc5921_record(args.directory) or {}
    print(f"target MS: {ms}  (field {record.get('field')}, {record.get('nchan')} channels, "
          f"rest frequency {record.get('rest_frequency')})")
    for name, cal in record.get("calibrators", {}).items():
        print(f"  {name}: {cal['stokes_i_jy']:.3f} Jy ({cal['role']})")
    print(f"record: {args.directory}/ngc5921.json  (prepared in {record.get('wall_seconds')} s)")
    return 0
