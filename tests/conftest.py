"""Shared fixtures: the simulated FAUST data every CASA test images.

``sim_tiny`` (session scope)
    A :class:`faust_hpc.simulate.SimResult` for CB68, Setup 2, SPWs
    ``244.936GHz_CS`` (narrow, 20 channels of 141 kHz, a rotating disk at
    vsys) and ``246.700GHz_cont`` (20 channels of 1.13 MHz, a line forest),
    size ``tiny`` (16 x 12m + 10 x 7m antennas; imsize 128 at 0.1"),
    built once per test session by ``faust-hpc simulate`` in a subprocess
    (~5 s). Useful attributes: ``data_dir`` (a run file's data_dir),
    ``ms_dir``, ``ms_paths["12m"|"7m"]``, ``truth`` (the parsed
    ``truth/truth.json``: per SPW peak, integrated flux, vsys, noise, rotation,
    channel frequencies, spw ids per array), ``model_fits[label]`` (true cube,
    Jy/pixel), ``runfile`` (its ``demo.toml``). Read-only: it is shared by
    every test; never write products into it (its demo.toml's product_dir is
    inside the shared directory -- use ``make_runfile`` instead).

``make_runfile`` (function scope)
    ``make_runfile(sim, tmp_path, filename="run.toml", **tables) -> Path``
    writes a variant of ``sim``'s demo.toml under ``tmp_path`` with its
    ``data_dir`` pointing at the simulated data and ``product_dir`` at
    ``tmp_path/"products"``. Keyword tables are deep-merged into the file,
    a ``None`` value removes a key, e.g.::

        path = make_runfile(sim_tiny, tmp_path,
                            imaging={"arrays": ["12m"], "spws": ["244.936GHz_CS"]},
                            spw={"244.936GHz_CS": {"nchunks": 1}},
                            scheduler={"retries": 0})

``ngc5921`` (session scope)
    Real data: the VLA NGC 5921 HI observation from casadata, calibrated and
    continuum-subtracted once per session by ``faust-hpc prepare-real`` in a
    subprocess (~15 s). A :class:`PreparedRealData` with ``outdir``, ``ms``
    (the target MS: field ``N5921_2``, 63 channels, LSRK) and ``record`` (the
    parsed ``ngc5921.json``: channels, rest frequency, calibrator fluxes).
    Read-only, like ``sim_tiny``: image into ``tmp_path``.

``casa`` (module scope)
    CASA in the test process (:mod:`faust_hpc.casa_env`, returned), configured
    and imported once per test module, its log in a temporary directory of
    that module (``casa.log_path()``), so a module can read its own tclean calls.

Truth helpers for image comparisons live in :mod:`faust_hpc.simulate.truth`
(``truth_convolved_peak(fits, bmaj, bmin, bpa)``, ``model_cube_from_fits``).
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

TINY_SPWS = ("244.936GHz_CS", "246.700GHz_cont")


def build_simulation(outdir: Path, size: str = "tiny", spws: tuple[str, ...] = TINY_SPWS,
                     field: str = "CB68", setup: int = 2) -> Any:
    """Run ``faust-hpc simulate`` in a fresh process (CASA state never leaks
    into the test process) and load the result."""
    from faust_hpc.simulate import SimResult

    cwd = outdir.parent / f"{outdir.name}-cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "faust_hpc", "simulate", str(outdir), "--size", size,
           "--field", field, "--setup", str(setup), "--spws", ",".join(spws)]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return SimResult.load(outdir)


@pytest.fixture(scope="session")
def sim_tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_simulation(tmp_path_factory.mktemp("sim") / "tiny")


@pytest.fixture(scope="module")
def casa(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from faust_hpc import casa_env

    module = request.module.__name__.rsplit(".", 1)[-1]
    casa_env.configure(log_path=tmp_path_factory.mktemp(f"{module}_casa_log") / "casa.log")
    casa_env.casatools()
    return casa_env


@dataclass(frozen=True)
class PreparedRealData:
    outdir: Path
    ms: Path
    record: dict[str, Any]


@pytest.fixture(scope="session")
def ngc5921(tmp_path_factory: pytest.TempPathFactory) -> PreparedRealData:
    from faust_hpc.realdata.ngc5921 import load_ngc5921_record, ms_path

    outdir = tmp_path_factory.mktemp("realdata") / "ngc5921"
    cmd = [sys.executable, "-m", "faust_hpc", "prepare-real", str(outdir)]
    proc = subprocess.run(cmd, cwd=outdir.parent, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    record = load_ngc5921_record(outdir)
    assert record is not None, f"no finished record in {outdir}"
    return PreparedRealData(outdir=outdir, ms=ms_path(outdir), record=record)


@pytest.fixture
def make_runfile() -> Callable[..., Path]:
    from faust_hpc.simulate.runfiles import write_runfile_variant

    def make(sim: Any, tmp_path: os.PathLike, filename: str = "run.toml", **tables: Any) -> Path:
        return write_runfile_variant(sim, Path(tmp_path) / filename, **tables)

    return make
