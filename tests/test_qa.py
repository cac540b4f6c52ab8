"""QA channel maps: exactly the channels above threshold, real PNG/PDF files.

The cube is written plane by plane as a CASA image in the product layout
(image, residual, clean mask, PB), with beam-correlated noise of known rms
and sources planted in known channels: bright ones that must be selected, a
faint one that must not, and a bright one outside the PB limit that must not
count either.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.casa

BASE = "CB68_244.936GHz_CS_joint_0.5_clean"
NOISE = 0.001
# channel -> (peak in units of the noise, east offset ", north offset ")
PLANTED = {3: (10.0, 0.0, 0.0), 10: (30.0, 0.5, -0.3), 11: (120.0, 0.0, 0.0), 17: (12.0, -1.5, 1.0),
           20: (2.5, 0.0, 0.0)}
OUTSIDE_PB = 6          # a 30-sigma source in a corner where PB < 0.2
EXPECTED = [3, 10, 11, 17]


def _gauss(east: np.ndarray, north: np.ndarray, e0: float, n0: float, fwhm: float) -> np.ndarray:
    return np.exp(-4 * np.log(2) * ((east - e0) ** 2 + (north - n0) ** 2) / fwhm ** 2)


@pytest.fixture(scope="module")
def qa_cube(casa, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from scipy.ndimage import gaussian_filter

    from faust_hpc.products.synthcube import CubeGrid, primary_beam, write_cube

    prod = tmp_path_factory.mktemp("qa") / "products"
    stem = prod / "images" / "CB68" / BASE
    stem.parent.mkdir(parents=True)
    grid = CubeGrid(nx=96, ny=96, nchan=24, cell_arcsec=0.1)
    east, north = grid.offsets_arcsec()
    pb = primary_beam(grid, 8.0)
    beam = 0.4
    sigma_pix = beam / grid.cell_arcsec / np.sqrt(8 * np.log(2))

    def noise(k: int, salt: int) -> np.ndarray:
        white = gaussian_filter(np.random.default_rng([5, salt, k]).standard_normal((grid.ny, grid.nx)), sigma_pix)
        return NOISE * white / white.std()

    images, residuals, masks = [], [], []
    for k in range(grid.nchan):
        sky = np.zeros((grid.ny, grid.nx))
        if k in PLANTED:
            snr, e0, n0 = PLANTED[k]
            sky += snr * NOISE * _gauss(east, north, e0, n0, 0.6 if snr < 100 else 1.2)
        if k == OUTSIDE_PB:
            sky += 30 * NOISE * _gauss(east, north, 4.6, 4.6, 0.4)
        images.append((sky + noise(k, 0)).astype(np.float32))
        resid = noise(k, 1)
        if k == 10:   # residual features beyond +-5 sigma, drawn as filled contours
            resid += 7 * NOISE * _gauss(east, north, 1.0, 1.0, 0.4) - 7 * NOISE * _gauss(east, north, -1, -1, 0.4)
        residuals.append(resid.astype(np.float32))
        masks.append((sky > 3 * NOISE).astype(np.float32))
    write_cube(f"{stem}.image", grid, lambda k: images[k], beam_arcsec=(beam, beam, 0.0))
    write_cube(f"{stem}.residual", grid, lambda k: residuals[k])
    write_cube(f"{stem}.mask", grid, lambda k: masks[k], unit="")
    write_cube(f"{stem}.pb", grid, lambda k: pb, unit="")
    return {"prod": prod, "image": Path(f"{stem}.image"), "images": images, "pb": pb, "grid": grid}


def test_selects_exactly_the_channels_above_threshold(qa_cube: dict) -> None:
    from faust_hpc.products.qa import CubeSet

    cset = CubeSet(qa_cube["image"])
    assert cset.rms == pytest.approx(NOISE, rel=0.1)
    assert list(cset.good_chan) == EXPECTED
    # the same rule computed independently on the planes that were written
    inside = qa_cube["pb"] >= 0.2
    by_hand = [k for k, plane in enumerate(qa_cube["images"]) if plane[inside].max() > 6 * cset.rms]
    assert list(cset.good_chan) == by_hand
    # a different threshold selects a different, still exact, set
    strict = CubeSet(qa_cube["image"], sigma=20, rms=NOISE)
    assert list(strict.good_chan) == [10, 11]
    # planes come back one channel at a time, PB-limited
    (im, rs, ma, pb), ix = next(strict.iter_planes())
    assert ix == 10 and im.shape == (96, 96) and np.isnan(im[0, 0]) and np.isfinite(im[48, 48])
    assert set(np.unique(ma)) <= {0.0, 1.0} and ma.max() == 1.0


def test_plots_written_and_overwrite_rules(qa_cube: dict) -> None:
    from faust_hpc.products.qa import make_qa_plots_from_image

    written = make_qa_plots_from_image(qa_cube["image"])
    plots = qa_cube["prod"] / "plots"
    names = sorted(p.name for p in written)
    assert names == sorted(f"{BASE}_qa_plot_{kind}.{ext}" for kind in ("image", "residual") for ext in ("png", "pdf"))
    for p in written:
        assert p.parent == plots and p.stat().st_size > 10_000
    png = plots / f"{BASE}_qa_plot_image.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in plots.iterdir() if p.name.startswith(".tmp")]
    stamps = {p: p.stat().st_mtime_ns for p in written}
    again = make_qa_plots_from_image(qa_cube["image"], overwrite=False)
    assert {p: p.stat().st_mtime_ns for p in again} == stamps
    os.utime(png, ns=(1, 1))
    make_qa_plots_from_image(qa_cube["image"], overwrite=True)
    assert png.stat().st_mtime_ns != 1


def test_many_channels_go_onto_pages(qa_cube: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from faust_hpc.products import qa

    monkeypatch.setattr(qa, "NCOLS", 2)
    monkeypatch.setattr(qa, "MAX_ROWS_PER_PAGE", 1)
    cset = qa.CubeSet(qa_cube["image"], rms=NOISE)
    written = qa.make_qa_plot(cset, kind="residual", outfilen="paged", plot_dir=tmp_path)
    assert sorted(p.name for p in written) == ["paged_residual.pdf", "paged_residual.png", "paged_residual_p2.png"]
    pdf = (tmp_path / "paged_residual.pdf").read_bytes()
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 2
    # a later run with fewer pages removes the stale extra page
    monkeypatch.setattr(qa, "MAX_ROWS_PER_PAGE", 2)
    qa.make_qa_plot(cset, kind="residual", outfilen="paged", plot_dir=tmp_path)
    assert not (tmp_path / "paged_residual_p2.png").exists()


def test_display_copy_block_average() -> None:
    from faust_hpc.products.qa import display_copy

    plane = np.arange(64, dtype=np.float32).reshape(8, 8)
    plane[0, 0] = np.nan
    small = display_copy(plane, 2, 0, 8, 0, 8)
    assert small.shape == (4, 4)
    assert small[0, 0] == pytest.approx(np.nanmean([1, 8, 9]))
    assert small[3, 3] == pytest.approx(np.mean([54, 55, 62, 63]))


def test_missing_inputs_and_bad_kind(qa_cube: dict, tmp_path: Path) -> None:
    from faust_hpc.errors import PrerequisiteError, UserInputError
    from faust_hpc.products.qa import CubeSet, make_qa_plot

    import shutil

    lonely = tmp_path / "CB68_244.936GHz_CS_7m_0.5_clean.image"
    shutil.copytree(qa_cube["image"], lonely)
    with pytest.raises(PrerequisiteError, match="missing .*7m_0.5_clean.residual"):
        CubeSet(lonely)
    with pytest.raises(UserInputError, match='invalid QA plot kind "model"'):
        make_qa_plot(CubeSet(qa_cube["image"], rms=NOISE), kind="model", plot_dir=tmp_path)


def test_make_all_qa_plots_and_command(qa_cube: dict, tmp_path: Path) -> None:
    from faust_hpc.products.qa import make_all_qa_plots

    images = qa_cube["prod"] / "images"
    chunk = images / "CB68" / "CB68_244.936GHz_CS_chunk2_joint_0.5_clean.image"
    chunk.mkdir()
    try:
        written = make_all_qa_plots("CB68", "clean", image_dir=images, plot_dir=tmp_path / "plots")
    finally:
        chunk.rmdir()
    assert len(written) == 4 and all(p.parent == tmp_path / "plots" for p in written)

    (tmp_path / "data" / "CB68-Setup2").mkdir(parents=True)
    runfile = tmp_path / "run.toml"
    runfile.write_text(f'[run]\ndata_dir = "data"\nproduct_dir = "{qa_cube["prod"]}"\n'
                       '[imaging]\nfields = ["CB68"]\nsetup = 2\nspws = ["244.936GHz_CS"]\n')
    proc = subprocess.run([sys.executable, "-m", "faust_hpc", "qa", str(runfile), "--no-overwrite"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{BASE}_qa_plot_residual.pdf" in proc.stdout


def test_partial_outputs_finds_only_temporaries(qa_cube: dict, tmp_path: Path) -> None:
    from faust_hpc.products import moments, qa

    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / f".tmp-123-abcd1234-{BASE}_qa_plot_image.png").write_text("x")
    (plots / f"{BASE}_qa_plot_image.png").write_text("x")
    (plots / ".tmp-123-abcd1234-CB68_other_qa_plot_image.png").write_text("x")
    assert [Path(p).name for p in qa.partial_outputs(qa_cube["image"], plots)] == \
        [f".tmp-123-abcd1234-{BASE}_qa_plot_image.png"]
    mom = tmp_path / "moments" / "CB68"
    mom.mkdir(parents=True)
    (mom / f".tmp-9-ffff0000-{BASE}.mom1.fits.im").mkdir()
    assert [Path(p).name for p in moments.partial_outputs(qa_cube["image"], tmp_path / "moments")] == \
        [f".tmp-9-ffff0000-{BASE}.mom1.fits.im"]


def test_strip_reading_gives_the_same_selection_and_planes(qa_cube: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from faust_hpc.products import qa
    from faust_hpc.products.cube import PlaneReader

    whole = qa.CubeSet(qa_cube["image"])
    monkeypatch.setattr(PlaneReader, "strips",
                        lambda self, budget, nchan: [(y, min(y + 11, self.ny) - 1) for y in range(0, self.ny, 11)])
    strips = qa.CubeSet(qa_cube["image"])
    assert list(strips.good_chan) == list(whole.good_chan)
    assert [s.peak for s in strips.stats] == [s.peak for s in whole.stats]
    # the display copy read strip by strip equals the one made from whole planes
    factor, bounds, _ = qa._panel_grid(whole)
    (data, ma, pb), = qa._page_display(whole, [11], "image", factor, bounds)
    im, _, ma_full, pb_full = whole.get_image_planes(11)
    np.testing.assert_array_equal(data, qa.display_copy(im, factor, *bounds))
    np.testing.assert_array_equal(ma, qa.display_copy(ma_full, factor, *bounds))
