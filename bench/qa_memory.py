#!/usr/bin/env python
"""Peak memory of QA plots and moment maps on a large cube.

Writes a 2000 x 2000 x 200 float32 CASA cube (3.2 GB) with its residual,
clean mask and primary beam in the product layout (plane by plane: the writer
itself never holds the cube), then runs, each in a fresh child process,

1. ``make_qa_plots_from_image`` (image + residual channel maps, PNG + PDF),
2. ``make_moments_from_image`` (max, mom0, mom1, mom2 and errors),
3. optionally (``--naive``) the original pipeline's way of reading a cube for
   QA, ``ia.getchunk()`` of the whole image, for the side-by-side ratio
   (needs > 3.2 GB of free memory; off by default on shared machines),

and reports each child's peak resident memory (``wait4`` rusage), wall time,
and the ratio of cube size to peak memory. The goal: QA + moments < 1 GB.
The last line of output is one JSON object.

    .venv/bin/python bench/qa_memory.py [--nx 2000] [--nchan 200] [--dir DIR] [--keep] [--naive]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = "CB68_244.936GHz_CS_joint_0.5_clean"

CHILD_QA = """
import sys
from faust_hpc import casa_env
casa_env.configure(log_path=sys.argv[2])
from faust_hpc.products.qa import make_qa_plots_from_image
files = make_qa_plots_from_image(sys.argv[1], plot_dir=sys.argv[3])
print(len(files))
"""

CHILD_MOMENTS = """
import sys
from faust_hpc import casa_env
casa_env.configure(log_path=sys.argv[2])
from faust_hpc.products.moments import make_moments_from_image
files = make_moments_from_image(sys.argv[1], moma_dir=sys.argv[3])
print(len(files))
"""

CHILD_NAIVE = """
import sys
from faust_hpc import casa_env
casa_env.configure(log_path=sys.argv[2])
ia = casa_env.casatools().image()
ia.open(sys.argv[1])
data = ia.getchunk(dropdeg=True)   # the original CubeSet: the whole cube at once
print(data.nbytes)
ia.done()
"""


def write_products(image_dir: Path, nx: int, nchan: int) -> dict:
    """Noise + a rotating disk in the middle channels; mask and PB to match."""
    import numpy as np

    from faust_hpc import casa_env
    from faust_hpc.products.synthcube import CubeGrid, DiskModel, primary_beam, write_cube

    casa_env.configure(log_path=image_dir.parent / "bench-write.casa.log")
    grid = CubeGrid(nx=nx, ny=nx, nchan=nchan, cell_arcsec=0.03, dv_kms=0.17)
    east, north = grid.offsets_arcsec()
    velo = grid.velocities()
    pb = primary_beam(grid, fwhm_arcsec=nx * grid.cell_arcsec * 0.6)
    model = DiskModel(peak=0.05, fwhm_arcsec=3.0)
    noise = 0.002
    near = np.abs(velo - grid.vsys_kms) < 3.5        # channels with emission
    cache: dict[int, np.ndarray] = {}

    def sky(k: int) -> np.ndarray:
        if not near[k]:
            return np.zeros((grid.ny, grid.nx), np.float32)
        if k not in cache:
            cache.clear()
            cache[k] = (model.plane(east, north, float(velo[k]), grid.vsys_kms) * pb).astype(np.float32)
        return cache[k]

    def image(k: int) -> np.ndarray:
        return sky(k) + np.random.default_rng([1, k]).standard_normal((grid.ny, grid.nx), np.float32) * noise

    def residual(k: int) -> np.ndarray:
        return np.random.default_rng([2, k]).standard_normal((grid.ny, grid.nx), np.float32) * noise

    def mask(k: int) -> np.ndarray:
        return (sky(k) > 3 * noise).astype(np.float32)

    stem = image_dir / BASE
    t0 = time.time()
    write_cube(f"{stem}.image", grid, image, beam_arcsec=(0.3, 0.3, 0.0))
    write_cube(f"{stem}.residual", grid, residual)
    write_cube(f"{stem}.mask", grid, mask, unit="")
    write_cube(f"{stem}.pb", grid, lambda k: pb, unit="")
    return {"write_s": round(time.time() - t0, 1), "emission_channels": int(near.sum())}


def run_child(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; its own peak RSS from wait4."""
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{err[-3000:]}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1), "wall_s": round(time.time() - t0, 1),
            "stdout": out.strip().splitlines()[-1] if out.strip() else ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nx", type=int, default=2000)
    parser.add_argument("--nchan", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the cubes and products")
    parser.add_argument("--naive", action="store_true", help="also measure a whole-cube read (needs >3.2 GB)")
    parser.add_argument("--reuse", action="store_true", help="reuse cubes already written in --dir")
    args = parser.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="faust-bench-qa-"))
    prod = work / "products"
    image_dir = prod / "images" / "CB68"
    image_dir.mkdir(parents=True, exist_ok=True)
    cube_bytes = args.nx * args.nx * args.nchan * 4
    print(f"writing 4 cubes of {args.nx}x{args.nx}x{args.nchan} float32 ({cube_bytes / 1e9:.2f} GB each) in {work}",
          flush=True)
    result: dict = {"bench": "qa_memory", "shape": [args.nx, args.nx, args.nchan],
                    "cube_gb": round(cube_bytes / 1e9, 3)}
    try:
        if args.reuse and (image_dir / f"{BASE}.pb").is_dir():
            result["write_s"] = 0.0
        else:
            result.update(write_products(image_dir, args.nx, args.nchan))
        image = str(image_dir / f"{BASE}.image")
        log = str(work / "bench.casa.log")
        print("QA plots ...", flush=True)
        qa = run_child(CHILD_QA, image, log, str(prod / "plots"))
        print(f"  peak RSS {qa['peak_rss_mb']} MB, {qa['wall_s']} s", flush=True)
        print("moment maps ...", flush=True)
        mom = run_child(CHILD_MOMENTS, image, log, str(prod / "moments"))
        print(f"  peak RSS {mom['peak_rss_mb']} MB, {mom['wall_s']} s", flush=True)
        result.update({"qa_peak_rss_mb": qa["peak_rss_mb"], "qa_wall_s": qa["wall_s"],
                       "moments_peak_rss_mb": mom["peak_rss_mb"], "moments_wall_s": mom["wall_s"]})
        peak = max(qa["peak_rss_mb"], mom["peak_rss_mb"])
        result["peak_rss_mb"] = peak
        result["goal_mb"] = 1024
        result["goal_met"] = peak < 1024
        result["cube_to_peak_ratio"] = round(cube_bytes / (peak * 1024 * 1024), 2)
        # what the original needed: the four cubes in memory at once
        result["original_estimate_mb"] = round(4 * cube_bytes / 2 ** 20)
        if args.naive:
            print("naive whole-cube read (the original CubeSet) ...", flush=True)
            naive = run_child(CHILD_NAIVE, image, log)
            result["naive_one_cube_peak_rss_mb"] = naive["peak_rss_mb"]
            result["naive_to_bounded_ratio"] = round(naive["peak_rss_mb"] / qa["peak_rss_mb"], 2)
        plots = sorted(p.name for p in (prod / "plots").iterdir() if not p.name.startswith("."))
        result["qa_files"] = len(plots)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0 if result.get("goal_met") else 1


if __name__ == "__main__":
    sys.exit(main())
