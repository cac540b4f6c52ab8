"""``faust-hpc qa RUNFILE``: QA channel maps of every final cube of a run."""
from __future__ import annotations

import argparse

HELP = "make QA channel-map plots (restored image and residual) of a run's final cubes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runfile", help="the run file (TOML)")
    parser.add_argument("--sigma", type=float, default=None, metavar="N",
                        help="plot channels whose peak exceeds N x rms (default 6)")
    parser.add_argument("--no-overwrite", action="store_true", help="skip images whose plots exist")


def run(args: argparse.Namespace) -> int:
    from faust_hpc import casa_env
    from faust_hpc.errors import PrerequisiteError, UserInputError
    from faust_hpc.products.qa import make_qa_plots_from_image
    from faust_hpc.products.runfile_images import run_images
    from faust_hpc.runfile import load_runfile

    spec = load_runfile(args.runfile, check_paths=False)
    if args.sigma is not None and not args.sigma > 0:
        raise UserInputError(f"--sigma must be a positive number, got {args.sigma}")
    images = run_images(spec)
    present = [im for im in images if im.image.exists()]
    if not present:
        raise PrerequisiteError(f"no final cubes of {spec.name} yet (looked for e.g. {images[0].image}); "
                                f"run `faust-hpc run {args.runfile}` first")
    casa_env.configure(spec.casa_data_dir, log_path=spec.product_dir / "logs" / "qa.casa.log")
    for im in images:
        if im not in present:
            print(f"missing (not imaged yet): {im.image}")
            continue
        for out in make_qa_plots_from_image(im.image, plot_sigma=args.sigma, overwrite=not args.no_overwrite,
                                            rms=im.rms):
            print(out)
    return 0 if len(present) == len(images) else 1
