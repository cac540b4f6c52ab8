#!/usr/bin/env python
"""What verifying the products costs on a whole-program resume.

A resume re-checks every done unit's outputs against its done record (size,
cheap content hash, CASA table file sizes: :mod:`faust_hpc.run.fingerprint`).
This bench builds a synthetic product tree and manifest of the whole FAUST
program's size -- 13 targets x 33 SPWs = 429 images, 20 chunks each (~10k
units), each image with its finalize products laid out as CASA writes them
(3 FITS, 9 CASA images with their ``table.*`` files, ``logtable`` and
``mask0`` subtables; the cubes are sparse files of the real size), 6 moment
maps, QA files, the prepare unit's chunk list and ``.sumwt`` -- and runs the
real :func:`faust_hpc.run.resume.resume` over it, side by side in one run:

- ``verified``: records with checks (what the launcher writes now);
- ``existence``: the same records without checks (the old behaviour, still
  what a manifest written before the checks gets).

Both read and parse the manifest (the resume does), best of 3, alternating.
Also reported: the cost at done time (fingerprints of one image's outputs,
paid once by the unit's child).

Left out: a cold page cache and a network filesystem's metadata latency
(each check is a few ``stat``/``open``/``read`` calls per file: on Lustre or
GPFS each may be an RPC, so expect the absolute time to grow there, the ratio
less so); the chunk images (removed by finalize, and not checked once their
finalize is done); CASA itself (rank 0 never imports it).

Run: ``.venv/bin/python bench/resume_verify.py [--images N]``. Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faust_hpc.layout import FINAL_FITS_EXTS, FINAL_PRODUCT_EXTS  # noqa: E402
from faust_hpc.products.moments import MOMENT_EXTS  # noqa: E402
from faust_hpc.run.fingerprint import fingerprints  # noqa: E402
from faust_hpc.run.manifest import Manifest  # noqa: E402
from faust_hpc.run.records import unit_record  # noqa: E402
from faust_hpc.run.resume import resume  # noqa: E402
from faust_hpc.run.snapshot import load_state  # noqa: E402
from faust_hpc.units import ImageKey, Unit  # noqa: E402

TARGETS, SPWS, CHUNKS = 13, 33, 20
CUBE_BYTES = 16_515_072 * 64   # table.f0_TSM0 of a cube (the demo's is 16.5 MB for 64 x 64 x 1000 px)
FITS_CUBE_BYTES = CUBE_BYTES + 8640


class SyntheticPlan:
    """What resume needs of a plan: units and their successors."""

    def __init__(self, units: list[Unit]) -> None:
        self.units = {u.id: u for u in units}

    def successors(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for u in self.units.values():
            for d in u.deps:
                out.setdefault(d, []).append(u.id)
        return out

    def expand(self, prepare_id: str, nchunks: int) -> list[Unit]:
        return []


def _file(path: Path, size: int, head: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size)  # sparse: the real size without the disk


def _table(path: Path, data_bytes: int) -> None:
    """A CASA table directory as CASA lays it out (sizes from a real product)."""
    _file(path / "table.dat", 8735, b"casa table description")
    _file(path / "table.f0", 293, b"f0")
    _file(path / "table.f0_TSM0", data_bytes)
    _file(path / "table.info", 25, b"Type = Image")
    _file(path / "table.lock", 325, b"lock")
    for sub, size in (("logtable", 164_352), ("mask0", 516_096)):
        _file(path / sub / "table.dat", 1392, b"sub description")
        _file(path / sub / "table.f0", size)
        _file(path / sub / "table.info", 82)
        _file(path / sub / "table.lock", 325)


def build(root: Path, images: int) -> tuple[SyntheticPlan, list[dict], int, float]:
    """The plan, the done records with checks, the number of output paths,
    and the seconds the fingerprints took (done-time cost)."""
    units: list[Unit] = []
    recs: list[dict] = []
    n_paths, fp_s = 0, 0.0
    for i in range(images):
        key = ImageKey(f"T{i // SPWS:02d}", f"{230 + i % SPWS}.000GHz_L{i % SPWS}", "joint", 0.5)
        base = root / "images" / key.field / f"{key.field}_{key.label}_joint_0.5_clean"
        out: dict[str, list[str]] = {}
        chunk_list = root / "chunks" / f"{key.field}_{key.label}.json"
        _file(chunk_list, 2000, b"[[0, 50]]")
        sumwt = root / "work" / f"{key.field}_{key.label}_tinyimg.sumwt"
        _table(sumwt, 4096)
        out["prepare"] = [str(chunk_list), str(sumwt)]
        for ext in FINAL_FITS_EXTS:
            _file(Path(f"{base}.{ext}"), FITS_CUBE_BYTES, b"SIMPLE  =                    T")
        for ext in FINAL_PRODUCT_EXTS:
            _table(Path(f"{base}.{ext}"), CUBE_BYTES)
        out["finalize"] = [f"{base}.{e}" for e in (*FINAL_FITS_EXTS, *FINAL_PRODUCT_EXTS)]
        mom = root / "moments" / key.field
        for ext in MOMENT_EXTS:
            _file(mom / f"{base.name}.{ext}.fits", 1_050_000, b"SIMPLE  =                    T")
        out["moments"] = [str(mom / f"{base.name}.{ext}.fits") for ext in MOMENT_EXTS]
        qa = root / "plots" / key.field
        for name, size in (("spectrum.png", 90_000), ("channels.png", 400_000), ("qa.json", 3000)):
            _file(qa / f"{base.name}.{name}", size, b"\x89PNG")
        out["qa"] = [str(qa / f"{base.name}.{n}") for n in ("spectrum.png", "channels.png", "qa.json")]

        prep = Unit(id=key.unit_id("prepare"), kind="prepare", key=key)
        chunks = [Unit(id=key.unit_id(f"chunk{k:02d}"), kind="chunk", key=key, deps=(prep.id,), chunk_index=k,
                       nchunks=CHUNKS) for k in range(CHUNKS)]
        fin = Unit(id=key.unit_id("finalize"), kind="finalize", key=key, deps=tuple(c.id for c in chunks))
        prods = [Unit(id=key.unit_id(k), kind=k, key=key, deps=(fin.id,)) for k in ("moments", "qa")]
        units += [prep, *chunks, fin, *prods]
        for u in (prep, *chunks, fin, *prods):
            paths = out.get(u.kind, [f"{base}.chunk{u.chunk_index}.{e}" for e in ("image", "residual")])
            t0 = time.perf_counter()
            checks = fingerprints(paths)
            fp_s += time.perf_counter() - t0
            n_paths += len(paths)
            recs.append(unit_record(u.id, "started", attempt=1, rank=1))
            recs.append(unit_record(u.id, "done", attempt=1, rank=1, outputs=paths, checks=checks or None))
    return SyntheticPlan(units), recs, n_paths, fp_s


def timed_resume(plan: SyntheticPlan, manifest: Manifest, root: Path) -> tuple[float, float, int]:
    t0, c0 = time.perf_counter(), time.process_time()
    state = resume(plan, load_state(manifest, use_snapshot=False), None, root)
    return time.perf_counter() - t0, time.process_time() - c0, len(state.done)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=TARGETS * SPWS, help="images (default: the whole program)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="faust-resume-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        plan, recs, n_paths, fp_s = build(root / "products", args.images)
        build_s = time.perf_counter() - t0
        verified = Manifest(root / "products")
        verified.append(*recs)
        existence = Manifest(root / "old")
        existence.append(*[{k: v for k, v in r.items() if k != "checks"} for r in recs])
        n_files = sum(len(files) for _root, _dirs, files in os.walk(root / "products"))
        best = {"verified": (float("inf"),) * 2, "existence": (float("inf"),) * 2}
        for _ in range(args.repeat):
            for name, m in (("verified", verified), ("existence", existence)):
                wall, cpu, ndone = timed_resume(plan, m, root / "products")
                assert ndone == len(plan.units), f"{name}: {ndone} of {len(plan.units)} units trusted"
                best[name] = min(best[name], (wall, cpu))
    (vw, vc), (ew, ec) = best["verified"], best["existence"]
    load = os.getloadavg()[0]
    print(f"{args.images} images, {len(plan.units)} units, {n_paths} recorded outputs, {n_files} files on disk "
          f"(built in {build_s:.1f} s); load average {load:.1f} on {os.cpu_count()} cores")
    print(f"                                 wall s     CPU s")
    print(f"  resume, outputs verified     {vw:8.3f}  {vc:8.3f}")
    print(f"  resume, existence only       {ew:8.3f}  {ec:8.3f}")
    print(f"  ratio verified / existence   {vw / ew:8.2f}  {vc / ec:8.2f}")
    print(f"  fingerprints at done time: {fp_s / args.images * 1e3:.2f} ms per image (all its units), "
          f"{fp_s:.2f} s for the program")
    print(json.dumps({"bench": "resume_verify", "images": args.images, "units": len(plan.units),
                      "outputs": n_paths, "files": n_files, "load_average": round(load, 2),
                      "verified_wall_s": round(vw, 3), "verified_cpu_s": round(vc, 3),
                      "existence_wall_s": round(ew, 3), "existence_cpu_s": round(ec, 3),
                      "ratio_wall": round(vw / ew, 2), "ratio_cpu": round(vc / ec, 2),
                      "fingerprint_per_image_ms": round(fp_s / args.images * 1e3, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
