"""``faust-hpc moments RUNFILE``: moment maps of every final cube of a run."""
from __future__ import annotations

import argparse
import logging

HELP = "make moment maps (max, mom0, mom1, mom2 and errors) of a run's final cubes"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runfile", help="the run file (TOML)")
    parser.add_argument("--vwin", type=float, default=None, metavar="KMS",
                        help="velocity half-window about vsys in km/s for every line (default: the run "
                             "file's moments_vwin_kms, else 5 km/s, 1.25 km/s for CCH)")
    parser.add_argument("--no-overwrite", action="store_true", help="skip images whose moment maps exist")


def run(args: argparse.Namespace) -> int:
    from faust_hpc import casa_env
    from faust_hpc.errors import PrerequisiteError, UserInputError
    from faust_hpc.products.moments import make_moments_from_image
    from faust_hpc.products.runfile_images import run_images
    from faust_hpc.runfile import load_runfile

    spec = load_runfile(args.runfile, check_paths=False)
    if args.vwin is not None and not args.vwin > 0:
        raise UserInputError(f"--vwin must be a positive number of km/s, got {args.vwin}")
    images = run_images(spec)
    present = [im for im in images if im.common.exists() or im.image.exists()]
    if not present:
        raise PrerequisiteError(f"no final cubes of {spec.name} yet (looked for e.g. {images[0].common}); "
                                f"run `faust-hpc run {args.runfile}` first")
    casa_env.configure(spec.casa_data_dir, log_path=spec.product_dir / "logs" / "moments.casa.log")
    for im in images:
        if im not in present:
            print(f"missing (not imaged yet): {im.common}")
            continue
        path = im.common if im.common.exists() else im.image
        vwin = args.vwin if args.vwin is not None else im.vwin
        for out in make_moments_from_image(path, vwin=vwin, overwrite=not args.no_overwrite, rms=im.rms):
            print(out)
    return 0 if len(present) == len(images) else 1
