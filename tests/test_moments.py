"""Moment maps of a simulated rotating source, against the truth.

Two sources of truth, both cheap and exact (no tclean in the loop):

- the simulate layer's truth files (``sim_tiny``: ``truth.json`` + the true
  model cube, Jy/pixel) convolved with a Gaussian beam, plus noise and a clean
  mask, written as a CASA cube in the product layout;
- an analytic rotating disk (:class:`faust_hpc.products.synthcube.DiskModel`)
  whose velocity integral is known in closed form, attenuated by a primary
  beam (so the PB correction of mom0 is tested too).

Checks: vsys within one channel, the sign of the velocity gradient along the
major axis, mom0 within 10 % of the truth integral, the masks (clean mask and
the Hanning-smoothed significance cut), the file names and headers, the
overwrite rules and the error messages.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.casa

BASE = "CB68_244.936GHz_CS_joint_0.5_clean"


@pytest.fixture(scope="module")
def disk(casa, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Analytic disk products + their moment maps (made once for the module)."""
    from faust_hpc.products.moments import make_moments_from_image
    from faust_hpc.products.synthcube import CubeGrid, DiskModel, write_disk_products

    prod = tmp_path_factory.mktemp("disk") / "products"
    grid = CubeGrid(nx=64, ny=64, nchan=80, cell_arcsec=0.1)
    truth = write_disk_products(prod / "images" / "CB68", BASE, grid, DiskModel(), pb_fwhm_arcsec=8.0)
    outputs = make_moments_from_image(prod / "images" / "CB68" / f"{BASE}.image")
    return {"prod": prod, "grid": grid, "truth": truth, "outputs": outputs}


def _read(path: Path) -> np.ndarray:
    from astropy.io import fits

    return np.asarray(fits.getdata(path), dtype=np.float64).squeeze()


def _maps(outputs: list[Path]) -> dict[str, np.ndarray]:
    return {p.name[len(BASE) + 1: -len(".fits")]: _read(p) for p in outputs}


# ----------------------------------------------------------------------------- analytic disk
def test_files_names_and_headers(disk: dict) -> None:
    from astropy.io import fits

    mom_dir = disk["prod"] / "moments" / "CB68"
    names = sorted(p.name for p in mom_dir.iterdir())
    assert names == sorted(f"{BASE}.{ext}.fits" for ext in
                           ("max.pbcor", "mom0.pbcor", "mom0_err.pbcor", "mom1", "mom1_err", "mom2"))
    head = fits.getheader(mom_dir / f"{BASE}.mom0.pbcor.fits")
    assert head["BUNIT"] == "Jy/beam.km/s" and head["OBJECT"] == "CB68"
    assert head["BMAJ"] * 3600 == pytest.approx(0.4)
    # the map sits at the channel nearest vsys on the cube's spectral axis
    v = 299_792.458 * (1 - head["CRVAL3"] / head["RESTFRQ"])
    assert abs(v - 5.0) <= disk["grid"].dv_kms / 2 + 1e-6
    assert fits.getheader(mom_dir / f"{BASE}.mom1.fits")["BUNIT"] == "km/s"


def test_vsys_recovered_within_one_channel(disk: dict) -> None:
    maps = _maps(disk["outputs"])
    mom0, mom1 = maps["mom0.pbcor"], maps["mom1"]
    ok = np.isfinite(mom1) & np.isfinite(mom0)
    v_mean = float(np.sum(mom0[ok] * mom1[ok]) / np.sum(mom0[ok]))
    assert abs(v_mean - 5.0) < disk["grid"].dv_kms
    # the peak-intensity map peaks on the source
    peak = np.unravel_index(np.nanargmax(maps["max.pbcor"]), maps["max.pbcor"].shape)
    assert abs(peak[0] - 32) <= 6 and abs(peak[1] - 32) <= 6


def test_velocity_gradient_sign(disk: dict) -> None:
    mom1 = _maps(disk["outputs"])["mom1"]
    xmaj = disk["truth"]["major_offset"]
    receding = np.nanmedian(mom1[xmaj > 0.3])
    approaching = np.nanmedian(mom1[xmaj < -0.3])
    assert receding > 5.0 + 0.3 and approaching < 5.0 - 0.3
    ok = np.isfinite(mom1) & (np.abs(xmaj) > 0.2)
    assert np.corrcoef(xmaj[ok], mom1[ok] - 5.0)[0, 1] > 0.5


def test_mom0_matches_analytic_integral(disk: dict) -> None:
    mom0 = _maps(disk["outputs"])["mom0.pbcor"]
    truth = disk["truth"]["integral"]
    bright = truth > 0.2 * truth.max()
    ratio = np.nansum(mom0[bright]) / truth[bright].sum()
    assert abs(ratio - 1.0) < 0.10, ratio
    # and pixel by pixel in the bright part (PB-corrected: the PB is 8" FWHM here)
    assert abs(np.nanmedian(mom0[bright] / truth[bright]) - 1.0) < 0.10


def test_masks_and_errors(disk: dict) -> None:
    maps = _maps(disk["outputs"])
    noise = disk["truth"]["noise"]
    truth = disk["truth"]["integral"]
    empty = truth < 1e-4 * truth.max()
    # mom0 only inside the clean mask: nothing where the mask never reaches
    assert np.isnan(maps["mom0.pbcor"][empty]).mean() > 0.95
    # mom1/mom2 need the Hanning-smoothed significance cut: fewer pixels than mom0
    n0, n1, n2 = (np.isfinite(maps[k]).sum() for k in ("mom0.pbcor", "mom1", "mom2"))
    assert 0 < n2 <= n1 <= n0
    # max uses every channel of the window, masked or not
    assert np.isfinite(maps["max.pbcor"]).all()
    err = maps["mom0_err.pbcor"]
    assert np.all(err[np.isfinite(err)] > 0)
    centre = truth > 0.5 * truth.max()
    assert np.nanmedian(maps["mom0.pbcor"][centre] / err[centre]) > 10
    # dM0 = dv sqrt(N) rms / pb: bounded by the window's channel count
    dv = disk["grid"].dv_kms
    nwin = int(np.sum(np.abs(disk["truth"]["velocities"] - 5.0) <= 5.0))
    pb = disk["truth"]["pb"]
    assert np.nanmax(err * pb) <= dv * np.sqrt(nwin) * noise * 1.3
    assert np.all(maps["mom1_err"][np.isfinite(maps["mom1_err"])] >= 0)
    # dispersion: line sigma 0.35 km/s, broadened by the beam near the centre
    assert 0.2 < np.nanmedian(maps["mom2"][centre]) < 0.9


def test_overwrite_false_skips_and_true_rewrites(disk: dict) -> None:
    from faust_hpc.products.moments import make_moments_from_image

    image = disk["prod"] / "images" / "CB68" / f"{BASE}.image.common"
    before = {p: p.stat().st_mtime_ns for p in disk["outputs"]}
    again = make_moments_from_image(image, overwrite=False)
    assert sorted(again) == sorted(before)
    assert {p: p.stat().st_mtime_ns for p in again} == before
    os.utime(disk["outputs"][0], ns=(1, 1))
    make_moments_from_image(image, overwrite=True)
    assert disk["outputs"][0].stat().st_mtime_ns != 1
    assert not [p for p in (disk["prod"] / "moments" / "CB68").iterdir() if p.name.startswith(".tmp")]


def test_velocity_window_defaults_and_errors(disk: dict) -> None:
    from faust_hpc.errors import PrerequisiteError, UserInputError
    from faust_hpc.products.moments import MomentMapper, default_vwin

    assert default_vwin("262.004GHz_CCH") == 1.25 and default_vwin("244.936GHz_CS") == 5.0
    image = disk["prod"] / "images" / "CB68" / f"{BASE}.image.common"
    assert MomentMapper(image).vwin == 5.0
    narrow = MomentMapper(image, vwin=1.0)
    lo, hi = narrow.get_region()
    velo = narrow.get_cube_velocity_axis()
    assert np.all(np.abs(velo[lo:hi + 1] - 5.0) <= 1.0 + 1e-9)
    assert abs(velo[lo - 1] - 5.0) > 1.0 and abs(velo[hi + 1] - 5.0) > 1.0
    with pytest.raises(UserInputError, match="no channel within"):
        MomentMapper(image, vsys=40.0).get_region()
    with pytest.raises(UserInputError, match="must be > 0"):
        MomentMapper(image, vwin=0)
    lonely = disk["prod"] / "images" / "CB68" / "CB68_244.936GHz_CS_12m_0.5_clean.image.common"
    import shutil

    shutil.copytree(image, lonely)
    try:
        with pytest.raises(PrerequisiteError, match=r"missing .*CB68_244.936GHz_CS_12m_0.5_clean.mask"):
            MomentMapper(lonely).make_moments()
    finally:
        shutil.rmtree(lonely)


def test_make_all_moment_maps_ignores_chunks(disk: dict, tmp_path: Path) -> None:
    from faust_hpc.products.moments import find_images, make_all_moment_maps

    images = disk["prod"] / "images"
    chunk = images / "CB68" / "CB68_244.936GHz_CS_chunk3_joint_0.5_clean.image.common"
    chunk.mkdir()
    try:
        assert find_images("CB68", "clean", image_dir=images, suffix=".image.common") == \
            [str(images / "CB68" / f"{BASE}.image.common")]
        written = make_all_moment_maps("CB68", "clean", vwin=2.0, image_dir=images, moma_dir=tmp_path)
        assert sorted(p.name for p in written) == sorted(p.name for p in disk["outputs"])
        assert all(p.parent == tmp_path / "CB68" for p in written)
    finally:
        chunk.rmdir()


def test_moments_command(disk: dict, tmp_path: Path) -> None:
    (tmp_path / "data" / "CB68-Setup2").mkdir(parents=True)
    runfile = tmp_path / "run.toml"
    runfile.write_text(f'[run]\ndata_dir = "data"\nproduct_dir = "{disk["prod"]}"\n'
                       '[imaging]\nfields = ["CB68"]\nsetup = 2\nspws = ["244.936GHz_CS"]\n'
                       '[spw."244.936GHz_CS"]\nmoments_vwin_kms = 3.0\n')
    proc = subprocess.run([sys.executable, "-m", "faust_hpc", "moments", str(runfile), "--no-overwrite"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{BASE}.mom1.fits" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "faust_hpc", "moments", str(runfile), "--vwin", "-1"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--vwin" in bad.stderr


# ----------------------------------------------------------------------------- simulate truth files
def test_moments_against_simulated_truth_files(casa, sim_tiny, tmp_path: Path) -> None:
    """The simulator's true CS cube (Jy/pixel) convolved with a 0.36" beam,
    plus noise at the truth's S/N, in a clean mask: mom0 integrates to the
    truth's integrated flux, mom1 finds vsys and the rotation's sign."""
    from scipy.ndimage import binary_dilation, gaussian_filter

    from faust_hpc.products.moments import make_moments_from_image
    from faust_hpc.products.synthcube import CubeGrid, write_cube
    from faust_hpc.simulate.truth import model_cube_from_fits

    spw = sim_tiny.truth["spws"]["244.936GHz_CS"]
    model, cell = model_cube_from_fits(sim_tiny.model_fits["244.936GHz_CS"])   # [x, y, chan]
    velo = np.asarray(spw["velocities_kms"])
    dv = float(velo[1] - velo[0])
    grid = CubeGrid(nx=model.shape[0], ny=model.shape[1], nchan=model.shape[2], cell_arcsec=cell,
                    restfreq_hz=float(spw["rest_freq_hz"]), vsys_kms=float(spw["vsys_kms"]), dv_kms=dv,
                    first_velocity_kms=float(velo[0]))
    bmaj = 0.36
    sigma_pix = bmaj / cell / np.sqrt(8 * np.log(2))
    beam_area_pix = np.pi * bmaj ** 2 / (4 * np.log(2)) / cell ** 2
    sky = [gaussian_filter(model[:, :, k].T, sigma_pix) * beam_area_pix for k in range(grid.nchan)]
    peak = max(float(p.max()) for p in sky)
    noise = peak / float(spw.get("peak_snr_joint_natural", 25.0))
    rng = np.random.default_rng(11)

    def noisy(k: int) -> np.ndarray:
        white = gaussian_filter(rng.standard_normal((grid.ny, grid.nx)), sigma_pix)
        return sky[k] + noise * white / white.std()

    grow = int(round(bmaj / cell))
    stem = tmp_path / "products" / "images" / "CB68" / BASE
    stem.parent.mkdir(parents=True)
    write_cube(f"{stem}.image.common", grid, noisy, beam_arcsec=(bmaj, bmaj, 0.0))
    write_cube(f"{stem}.mask", grid,
               lambda k: binary_dilation(sky[k] > noise, iterations=grow).astype(np.float32), unit="")
    write_cube(f"{stem}.pb", grid, lambda k: np.ones((grid.ny, grid.nx), np.float32), unit="", nchan=1)
    outputs = make_moments_from_image(f"{stem}.image.common")
    maps = _maps(outputs)
    # mom0 (Jy/beam km/s) summed over pixels / beam area = Jy km/s
    flux = np.nansum(maps["mom0.pbcor"]) / beam_area_pix
    assert flux == pytest.approx(spw["integrated_flux_jy_kms"], rel=0.10)
    mom0, mom1 = maps["mom0.pbcor"], maps["mom1"]
    ok = np.isfinite(mom1) & np.isfinite(mom0)
    v_mean = float(np.sum(mom0[ok] * mom1[ok]) / np.sum(mom0[ok]))
    assert abs(v_mean - spw["vsys_kms"]) < abs(dv)
    # gradient sign: the truth names the redshifted side of the major axis
    pa = np.deg2rad(spw["rotation"]["redshifted_pa_deg"])
    east = -(np.arange(grid.nx) - grid.nx // 2) * cell
    north = (np.arange(grid.ny) - grid.ny // 2) * cell
    xmaj = east[None, :] * np.sin(pa) + north[:, None] * np.cos(pa)
    sel = ok & (np.abs(xmaj) > 0.25)
    assert np.corrcoef(xmaj[sel], mom1[sel] - spw["vsys_kms"])[0, 1] > 0.3


def test_strip_processing_gives_the_same_maps(disk: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large cubes are processed in strips of rows and blocks of channels;
    splitting a small cube into odd-sized strips and blocks must not change
    the maps."""
    from faust_hpc.products import moments
    from faust_hpc.products.cube import PlaneReader
    from faust_hpc.products.moments import make_moments_from_image

    monkeypatch.setattr(moments, "MAX_BLOCK_CHANNELS", 5)   # and blocks of 5 channels
    monkeypatch.setattr(PlaneReader, "strips",
                        lambda self, budget, nchan: [(y, min(y + 7, self.ny) - 1) for y in range(0, self.ny, 7)])
    image = disk["prod"] / "images" / "CB68" / f"{BASE}.image.common"
    strips = _maps(make_moments_from_image(image, moma_dir=tmp_path))
    whole = _maps(disk["outputs"])
    for ext in whole:
        np.testing.assert_allclose(strips[ext], whole[ext], rtol=1e-6, equal_nan=True, err_msg=ext)
