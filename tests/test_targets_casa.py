"""A measurement set that is not FAUST's, imaged from the run file alone: the
VLA NGC 5921 HI data from casadata (the session fixture ``ngc5921`` calibrates
them once), a ``[target]`` and a ``[window]`` table, and the launcher path a
user walks: plan, image (serial), status, report, rerun. Small on purpose
(one chunk of ~8 channels, 128 px), so the whole file stays cheap; the
full-band, multi-rank run is the real-data demo's test."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faust_hpc.spectral import C_KMS

VSYS = 1480.0
VWIN_KMS = 40.0
HI_HZ = 1420.405752e6


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("faust-hpc")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "faust_hpc"]


def _runfile(tmp_path: Path, ms: Path, field: str = "N5921_2", window: str = "") -> Path:
    window = window or f'restfreq = "1420.405752MHz"\nkind = "line"\nline_vwin = "{VWIN_KMS:g}km/s"\n'
    text = f"""
[run]
data_dir = "{ms.parent}"
product_dir = "products"

[target."{field}"]
data = "{ms.name}"
vsys_kms = {VSYS}

[window."HI"]
{window}
[imaging]
fields = ["{field}"]
spws = ["HI"]
arrays = ["all"]
weightings = [0.5]
fullcube = false
imsize = 128
nchunks = 1

[spw."HI"]
scales = [0, 5, 15]

[scheduler]
retries = 0
"""
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def _cli_run(tmp_path: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*_cli(), *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def test_ngc5921_from_the_run_file(ngc5921, tmp_path):
    from astropy.io import fits

    runfile = _runfile(tmp_path, ngc5921.ms)
    plan = _cli_run(tmp_path, "plan", str(runfile), "--json")
    assert plan.returncode == 0, plan.stderr[-2000:]
    from faust_hpc.plan import build_plan
    from faust_hpc.runfile import load_runfile

    assert json.loads(plan.stdout)["units"] == len(build_plan(load_runfile(runfile, check_paths=False)).units)
    assert json.loads(plan.stdout)["units_by_kind"]["chunk"] == 1

    image = _cli_run(tmp_path, "image", str(runfile))
    assert image.returncode == 0, image.stderr[-3000:]

    products = tmp_path / "products"
    base = "N5921_2_HI_all_0.5_clean"
    cube = products / "images" / "N5921_2" / f"{base}.image.pbcor.common.fits"
    with fits.open(cube) as hdul:
        head, data = hdul[0].header, hdul[0].data
    assert head["CTYPE3"] == "FREQ" and head["SPECSYS"] == "LSRK"
    assert head["RESTFRQ"] == pytest.approx(HI_HZ)
    assert head["TELESCOP"] == "VLA" and head["INSTRUME"] == "VLA"      # the true instrument, not ALMA
    assert head["OBJECT"] == "N5921_2" and head["NAXIS1"] == 128
    nchan = head["NAXIS3"]
    freqs = head["CRVAL3"] + (np.arange(nchan) + 1 - head["CRPIX3"]) * head["CDELT3"]
    velo = C_KMS * (1.0 - freqs / HI_HZ)
    chan_kms = abs(head["CDELT3"]) / HI_HZ * C_KMS
    assert nchan == pytest.approx(VWIN_KMS / chan_kms, abs=1.0)
    assert velo.min() - chan_kms <= VSYS - VWIN_KMS / 2 + chan_kms and velo.max() + chan_kms >= VSYS + VWIN_KMS / 2 - chan_kms
    # the cell follows the data: a tenth of lambda / longest baseline (VLA D: ~40 arcsec)
    assert 2.0 < abs(head["CDELT1"]) * 3600 < 8.0
    assert 30.0 < head["BMAJ"] * 3600 < 90.0
    assert np.nanmax(data) > 10 * np.nanstd(data[:, :, :10, :10])  # HI emission, far above the edge noise

    moments = products / "moments" / "N5921_2"
    with fits.open(moments / f"{base}.mom1.fits") as hdul:
        mom1 = hdul[0].data
    finite = mom1[np.isfinite(mom1)]
    assert finite.size > 0
    assert np.all(np.abs(finite - VSYS) <= VWIN_KMS / 2 + chan_kms)   # vsys and vwin from the run file
    assert (products / "plots" / f"{base}_qa_plot_image.png").stat().st_size > 0

    status = _cli_run(tmp_path, "status", str(runfile), "--json")
    assert status.returncode == 0, status.stderr
    totals = json.loads(status.stdout)["totals"]
    assert totals["done"] == totals["total"] == len(build_plan(load_runfile(runfile, check_paths=False)).units)

    report = _cli_run(tmp_path, "report", str(runfile))
    assert report.returncode == 0, report.stderr[-2000:]

    rerun = _cli_run(tmp_path, "rerun", str(runfile), "--spw", "HI", "--chunk", "0")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = json.loads(_cli_run(tmp_path, "status", str(runfile), "--json").stdout)["totals"]
    assert after["done"] < after["total"]


@pytest.mark.parametrize("field, window, needle", [
    ("NGC5921", "", 'run.toml: [target."NGC5921"] data: '),
    ("N5921_2", 'restfreq = "1667.359MHz"\n', 'run.toml: [window."HI"] window "HI": no SPW of field N5921_2'),
    ("N5921_2", 'restfreq = "1420.405752MHz"\nspw = 3\n', 'run.toml: [window."HI"] window "HI": spw = 3 is not'),
    ("N5921_2", 'restfreq = "1420.405752MHz"\nspw = "HI-band"\n', 'no SPW named "HI-band"'),
], ids=["unknown field", "no SPW covers the window", "no such SPW id", "no such SPW name"])
def test_the_measurement_set_check_knows_run_file_targets(ngc5921, tmp_path, field, window, needle):
    runfile = _runfile(tmp_path, ngc5921.ms, field=field, window=window)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = _cli_run(tmp_path, "run", str(runfile), timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and needle in lines[0], proc.stderr[-3000:]
    if field == "NGC5921":
        assert 'holds no field "NGC5921" (its fields: N5921_2)' in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "products").exists()
