"""Wall time of each imaging stage on the default simulated data.

    .venv/bin/python bench/stages.py [--size small] [--label 244.936GHz_CS] [--workdir DIR] [--keep]

Simulates the data (``faust-hpc simulate``, default size) unless ``--sim DIR``
points at an existing simulation, then runs the default pipeline for one
narrow SPW (joint, Briggs 0.5, chunked as the demo run file says) stage by
stage through the documented API, timing each call: the sum-of-weights stamp
and chunk list (prepare), each chunk's dirty / nomask / seed mask / clean,
and the finalize steps (common beam, per-chunk postprocess, concatenation,
FITS). Prints a table and ends with one JSON line.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=("tiny", "small", "medium"))
    parser.add_argument("--label", default="244.936GHz_CS")
    parser.add_argument("--sim", default=None, help="existing simulation directory (skip simulating)")
    parser.add_argument("--workdir", default=None, help="where to simulate and image (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="faust-bench-stages-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.time()
    if args.sim:
        simdir = Path(args.sim).resolve()
    else:
        simdir = workdir / "sim"
        subprocess.run([sys.executable, "-m", "faust_hpc", "simulate", str(simdir), "--size", args.size,
                        "--spws", args.label], check=True, cwd=workdir, capture_output=True)
        timings["simulate"] = time.time() - t0

    from faust_hpc import casa_env
    from faust_hpc.execute import config_for
    from faust_hpc.runfile import load_runfile
    from faust_hpc.simulate import SimResult
    from faust_hpc.simulate.runfiles import write_runfile_variant

    sim = SimResult.load(simdir)
    runfile = write_runfile_variant(sim, workdir / "bench.toml", imaging={"spws": [args.label]})
    spec = load_runfile(runfile)
    casa_env.configure(spec.casa_data_dir, log_path=workdir / "bench.casa.log")
    casa_env.casatasks()
    key = spec.image_keys()[0]
    config = config_for(spec, key)
    ext, th = spec.ext, spec.thresholds
    setting = spec.nchunks_for(key.label)
    nchunks = None if setting in ("default", "auto") else int(setting)

    def timed(name: str, func, *a, **kw):
        start = time.time()
        out = func(*a, **kw)
        timings[name] = timings.get(name, 0.0) + time.time() - start
        return out

    chunked = timed("prepare (stamp + chunk list)", config.prepare_chunks, nchunks=nchunks, ext=ext)
    per_chunk: list[dict[str, float]] = []
    for cc in chunked:
        row = {}
        for stage, call in (("dirty", lambda: cc.make_dirty_cube()),
                            ("nomask", lambda: cc.clean_line_nomask(sigma=th.nomask_sigma)),
                            ("seedmask", lambda: cc.make_seed_mask(sigma=th.seedmask_sigma)),
                            ("clean", lambda: cc.clean_line(ext=ext, sigma=th.clean_sigma))):
            start = time.time()
            call()
            row[stage] = time.time() - start
            timings[f"chunk {stage}"] = timings.get(f"chunk {stage}", 0.0) + row[stage]
        per_chunk.append(row)
    timed("finalize (beam, postprocess, concat, FITS)", chunked.postprocess, ext=ext)
    total = time.time() - t0

    geo = config.dset
    print(f"stage timings: {key.path}, {chunked.nchunks} chunks x {[c.chunk.nchan for c in chunked]} channels, "
          f"imsize {geo.imsize[0]} at {geo.cell}, scales {config.scales}")
    for name, seconds in timings.items():
        print(f"  {name:45s} {seconds:8.1f} s")
    for i, row in enumerate(per_chunk):
        print(f"  chunk{i}: " + ", ".join(f"{k} {v:.1f} s" for k, v in row.items()))
    print(f"  {'total':45s} {total:8.1f} s")
    result = {"bench": "stages", "size": args.size, "label": args.label, "nchunks": chunked.nchunks,
              "nchan": chunked.nchan_total, "imsize": geo.imsize[0], "cell": geo.cell,
              "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
              "seconds": {k: round(v, 2) for k, v in timings.items()},
              "per_chunk_seconds": [{k: round(v, 2) for k, v in r.items()} for r in per_chunk],
              "total_s": round(total, 2)}
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
