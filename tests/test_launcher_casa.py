"""The launcher with the real imaging executor (real CASA units on sim_tiny).

The cheap-unit tests in test_launcher.py cover dispatch, crashes and resume in
detail; this one checks the promise they cannot: the same run file gives the
same science products, pixel for pixel, imaged serially in one process
(`faust-hpc image`) and by `mpirun -n 3 faust-hpc run` (two workers, units in
child processes), with every unit done exactly once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from faust_hpc.plan import build_plan
from faust_hpc.runfile import load_runfile

SPW = "244.936GHz_CS"
# Small enough for the test budget: one SPW, 12m only, 64 px, single-scale clean, 2 chunks.
IMAGING = {"spws": [SPW], "arrays": ["12m"], "imsize": 64, "cell_arcsec": 0.15}
SPW_SETTINGS = {SPW: {"nchunks": 2, "scales": [0]}}


def _env() -> dict[str, str]:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.pop("FAUST_DATA_DIR", None)
    return env


def _science_products(product_dir: Path) -> dict[str, np.ndarray]:
    """Pixel data of every FITS product (final cube and moment maps), by name."""
    found = {}
    for path in sorted(product_dir.glob("images/CB68/*.fits")) + sorted(product_dir.glob("moments/CB68/*.fits")):
        with fits.open(path) as hdul:
            found[path.name] = np.array(hdul[0].data)
    return found


def _assert_archive_products(product_dir: Path) -> None:
    """The final products as the original delivers them (issue 10): the three
    FITS of every image, chunk products named ``<FIELD>_<LABEL>_chunk<N>_<ARRAY>_
    <WEIGHTING>_<EXT>``, and OBJECT / INSTRUME / DATAMIN / DATAMAX on every
    exported cube and moment map."""
    images = product_dir / "images" / "CB68"
    stem = f"CB68_{SPW}_12m_0.5_clean"
    cubes = [images / f"{stem}.{ext}" for ext in ("image.pbcor.common.fits", "mask.fits", "pb.fits")]
    assert [p.name for p in cubes if not p.exists()] == []
    for k in range(SPW_SETTINGS[SPW]["nchunks"]):
        assert (images / f"CB68_{SPW}_chunk{k}_12m_0.5_clean.image").is_dir()
    assert sorted(p.name for p in images.glob("*clean_chunk*")) == []          # not the old order
    moments = sorted((product_dir / "moments" / "CB68").glob("*.fits"))
    assert moments
    for path in cubes + moments:
        with fits.open(path) as hdul:
            head, data = hdul[0].header, hdul[0].data
        if path in cubes:
            assert head["NAXIS"] == 4, path.name
        assert head["OBJECT"] == "CB68" and head["INSTRUME"] == "ALMA", path.name
        assert head["DATAMIN"] == pytest.approx(float(np.nanmin(data)), rel=1e-6, abs=1e-12), path.name
        assert head["DATAMAX"] == pytest.approx(float(np.nanmax(data)), rel=1e-6, abs=1e-12), path.name


@pytest.mark.casa
@pytest.mark.mpi
def test_serial_image_and_mpi_run_give_identical_products(sim_tiny, make_runfile, tmp_path):
    serial = make_runfile(sim_tiny, tmp_path / "serial", imaging=IMAGING, spw=SPW_SETTINGS)
    parallel = make_runfile(sim_tiny, tmp_path / "mpi", imaging=IMAGING, spw=SPW_SETTINGS)

    res = subprocess.run([sys.executable, "-m", "faust_hpc", "image", str(serial)],
                         capture_output=True, text=True, env=_env(), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]

    mpirun = Path(sys.executable).with_name("mpirun")
    res = subprocess.run([str(mpirun), "-n", "3", "--oversubscribe", sys.executable, "-m", "faust_hpc",
                          "run", str(parallel)], capture_output=True, text=True, env=_env(), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]

    serial_products = _science_products(tmp_path / "serial" / "products")
    mpi_products = _science_products(tmp_path / "mpi" / "products")
    final = f"CB68_{SPW}_12m_0.5_clean.image.pbcor.common.fits"
    assert final in serial_products and any(".mom0" in name for name in serial_products)
    assert serial_products.keys() == mpi_products.keys()
    for name, data in serial_products.items():
        assert data.shape == mpi_products[name].shape, name
        assert np.array_equal(data, mpi_products[name], equal_nan=True), f"{name} differs"

    _assert_archive_products(tmp_path / "serial" / "products")
    _assert_archive_products(tmp_path / "mpi" / "products")

    # Every unit of the MPI run started and finished exactly once, on a worker rank.
    records = [json.loads(line) for line in
               (tmp_path / "mpi" / "products" / ".faust-hpc" / "manifest.jsonl").read_text().splitlines()
               if line.strip()]
    done = [r["unit"] for r in records if r.get("event") == "done"]
    started = [r["unit"] for r in records if r.get("event") == "started"]
    assert sorted(done) == sorted(set(done)) == sorted(started)
    assert {u.rsplit("/", 1)[1] for u in done} == {"prepare", "chunk00", "chunk01", "beam", "post00", "post01",
                                                   "concat00", "finalize", "moments", "qa"}
    assert all(r["rank"] in (1, 2) for r in records if r.get("event") == "done")

    # Issue 13 (items 1, 2) on real CASA products: a re-run trusts the checked
    # products (moments and QA reading the final images change none of their
    # checks), and a final FITS cut to half its size is remade -- with its chunks
    # (whose images the concat unit reads; reading them changed their table files), the
    # beam and posts made from them, moments and QA -- pixel for pixel.
    mpi_dir = tmp_path / "mpi" / "products"

    def rerun_started() -> list[str]:
        manifest = mpi_dir / ".faust-hpc" / "manifest.jsonl"
        n = len(manifest.read_text().splitlines())
        again = subprocess.run([sys.executable, "-m", "faust_hpc", "run", str(parallel)], capture_output=True,
                               text=True, env=_env(), timeout=900)
        assert again.returncode == 0, again.stderr[-3000:]
        new = [json.loads(line) for line in manifest.read_text().splitlines()[n:] if line.strip()]
        return sorted(r["unit"].rsplit("/", 1)[1] for r in new if r.get("event") == "started")

    assert rerun_started() == []
    cube = mpi_dir / "images" / "CB68" / final
    cube.write_bytes(cube.read_bytes()[: cube.stat().st_size // 2])
    assert rerun_started() == ["beam", "chunk00", "chunk01", "concat00", "finalize", "moments", "post00", "post01",
                               "qa"]
    assert _science_products(mpi_dir).keys() == mpi_products.keys()
    for name, data in _science_products(mpi_dir).items():
        assert np.array_equal(data, mpi_products[name], equal_nan=True), f"{name} differs after the remake"


@pytest.mark.casa
@pytest.mark.mpi
def test_three_launchers_one_killed_give_one_launchers_products(sim_tiny, make_runfile, tmp_path):
    """Issue 12, item 4, on real CASA units: two ``mpirun -n 2`` launchers and
    a serial one drain one run; one MPI launcher is SIGKILLed (its whole tree)
    while it images a chunk. The survivors finish: every unit done exactly
    once, and the science products equal a single launcher's pixel for pixel."""
    from faust_hpc.run.manifest import Manifest
    from tests.launcher_helpers import descendants, kill_tree, reaped, wait_for

    single = make_runfile(sim_tiny, tmp_path / "single", imaging=IMAGING, spw=SPW_SETTINGS)
    shared = make_runfile(sim_tiny, tmp_path / "shared", imaging=IMAGING, spw=SPW_SETTINGS)
    mpirun = str(Path(sys.executable).with_name("mpirun"))

    def launcher(ranks: int | None) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "faust_hpc", "run", str(shared)]
        if ranks:
            cmd = [mpirun, "-n", str(ranks), "--oversubscribe", *cmd]
        return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    recs = Manifest(tmp_path / "shared" / "products").records   # a torn last line while they write: skipped

    with reaped(launcher(2)) as a, reaped(launcher(2)) as b, reaped(launcher(None)) as c:
        def imaging_a_chunk(proc: subprocess.Popen) -> bool:
            pids = set(descendants(proc.pid))
            ids = {r["id"] for r in recs() if r.get("event") == "launcher" and r["pid"] in pids}
            ended = {(r["unit"], r["attempt"]) for r in recs() if r.get("event") in ("done", "failed")}
            return any(r.get("event") == "started" and r.get("launcher") in ids and "/chunk" in r["unit"]
                       and (r["unit"], r["attempt"]) not in ended for r in recs())

        # the victim: whichever MPI launcher images a chunk first (which one claims the chunks is a race)
        victim = wait_for(lambda: next((p for p in (a, b) if imaging_a_chunk(p)), None), timeout=600,
                          what="an MPI launcher to image a chunk")
        survivor = b if victim is a else a
        kill_tree(victim.pid)
        victim.wait()
        out_b, _ = survivor.communicate(timeout=900)
        out_c, _ = c.communicate(timeout=900)
    b = survivor
    assert b.returncode == 0, out_b[-3000:]
    assert c.returncode == 0, out_c[-3000:]
    done = [r["unit"] for r in recs() if r.get("event") == "done"]
    assert sorted(done) == sorted(set(done))
    assert set(done) == set(build_plan(load_runfile(shared, check_paths=False)).units)   # every unit, once

    res = subprocess.run([sys.executable, "-m", "faust_hpc", "run", str(single)], capture_output=True, text=True,
                         env=_env(), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    reference = _science_products(tmp_path / "single" / "products")
    products = _science_products(tmp_path / "shared" / "products")
    assert reference and reference.keys() == products.keys()
    for name, data in reference.items():
        assert np.array_equal(data, products[name], equal_nan=True), f"{name} differs"
