"""One run file, one answer: a per-SPW ``rms`` override reaches the moments and
QA units of ``faust-hpc run`` exactly as it reaches ``faust-hpc moments`` and
``faust-hpc qa`` (issue 9: the units used to drop it and estimate the noise).

Real CASA on sim_tiny, as cheap as the pipeline allows: one SPW, 12m only,
64 px, single-scale clean, two chunks (one chunk fails today: imageconcat
needs two images), one serial ``faust-hpc run``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

SPW = "244.936GHz_CS"
IMAGING = {"spws": [SPW], "arrays": ["12m"], "imsize": 64, "cell_arcsec": 0.15}
TRUE_RMS = 0.0254      # the simulation's 12m natural-weighted image rms (truth.json), Jy/beam
RMS_OVERRIDE = 0.06    # far enough from the estimate to change masks and the QA channel selection


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FAUST_DATA_DIR", None)
    return env


def _faust(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faust_hpc", *args], capture_output=True, text=True,
                          env=_env(), timeout=900)


def _maps(moments_dir: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(moments_dir.glob("*.fits")):
        with fits.open(path) as hdul:
            out[path.name] = np.array(hdul[0].data)
    return out


def _pngs(plots_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(plots_dir.glob("*.png"))}


@pytest.mark.casa
def test_rms_override_gives_the_same_maps_from_run_and_from_the_commands(sim_tiny, make_runfile, tmp_path):
    runfile = make_runfile(sim_tiny, tmp_path / "run", imaging=IMAGING,
                           spw={SPW: {"nchunks": 2, "scales": [0], "rms": RMS_OVERRIDE}})
    products = tmp_path / "run" / "products"
    res = _faust("run", str(runfile))
    assert res.returncode == 0, res.stderr[-3000:]
    moments_dir, plots_dir = products / "moments" / "CB68", products / "plots"
    from_run, plots_run = _maps(moments_dir), _pngs(plots_dir)
    assert any(".mom0" in n for n in from_run) and plots_run

    for command in ("moments", "qa"):
        res = _faust(command, str(runfile))
        assert res.returncode == 0, res.stderr[-3000:]
    from_cmd, plots_cmd = _maps(moments_dir), _pngs(plots_dir)
    assert from_cmd.keys() == from_run.keys()
    for name, data in from_run.items():
        assert np.array_equal(data, from_cmd[name], equal_nan=True), f"{name}: run and moments command differ"
    assert plots_cmd == plots_run   # the same channels, panels and contour levels

    # The override matters: without it the noise is estimated (about TRUE_RMS) and
    # both the moment masks and the QA channel selection differ.
    from faust_hpc import casa_env
    from faust_hpc.products.moments import make_moments_from_image
    from faust_hpc.products.qa import CubeSet

    casa_env.configure(log_path=tmp_path / "casa.log")
    image = products / "images" / "CB68" / f"CB68_{SPW}_12m_0.5_clean.image"
    estimated = _maps(Path(make_moments_from_image(image, moma_dir=tmp_path / "estimated")[0]).parent)
    assert any(not np.array_equal(data, estimated[name], equal_nan=True) for name, data in from_run.items())
    with_override, without = CubeSet(image, rms=RMS_OVERRIDE), CubeSet(image)
    assert without.rms < RMS_OVERRIDE / 1.5 and abs(without.rms / TRUE_RMS - 1) < 0.5
    assert set(with_override.good_chan) < set(without.good_chan)
