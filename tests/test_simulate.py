"""The simulated FAUST data (``sim_tiny``) look like the real thing where the
pipeline looks: file layout, 12m/7m by dish diameter, SPW names vs ids,
intents, SOURCE, weights from the injected noise, LSRK line at vsys, and a
truth that is self-consistent and visible in a real dirty image."""
from __future__ import annotations

import fnmatch
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faust_hpc.catalog import C_KMS, get_spw, load_catalog
from faust_hpc.errors import UserInputError
from faust_hpc.simulate import simulate
from faust_hpc.simulate.truth import integrated_flux_jy_kms, model_cube_from_fits, truth_convolved_peak

CS = "244.936GHz_CS"
CONT = "246.700GHz_cont"


@pytest.fixture(scope="module")
def tools(casa):
    return casa.casatools()


def test_ms_layout_follows_the_data_layout(sim_tiny):
    layout = load_catalog().data_layout
    assert sim_tiny.ms_dir == sim_tiny.data_dir / "CB68-Setup2"
    found = sorted(p for p in sim_tiny.ms_dir.iterdir() if fnmatch.fnmatch(p.name, layout["ms_glob"]))
    assert found == sorted(sim_tiny.ms_paths.values())
    assert set(sim_tiny.ms_paths) == {"12m", "7m"}
    assert not list(sim_tiny.outdir.glob(".simulate-work*"))


def test_no_casa_log_in_the_working_directory(sim_tiny):
    cwd = sim_tiny.outdir.parent / f"{sim_tiny.outdir.name}-cwd"
    assert cwd.is_dir() and not list(cwd.glob("casa-*.log"))
    assert list((sim_tiny.outdir / "logs").glob("simulate-*.casa.log"))


@pytest.mark.casa
def test_12m_and_7m_blocks_separate_by_dish_diameter(sim_tiny, tools):
    msmd = tools.msmetadata()
    for kind, (lo, hi) in {"12m": ("11m", "13m"), "7m": ("6m", "8m")}.items():
        msmd.open(str(sim_tiny.ms_paths[kind]))
        try:
            nant = msmd.nantennas()
            assert len(msmd.antennaids(mindiameter=lo, maxdiameter=hi)) == nant > 0
            other = ("6m", "8m") if kind == "12m" else ("11m", "13m")
            assert len(msmd.antennaids(mindiameter=other[0], maxdiameter=other[1])) == 0
            assert msmd.observatorynames()[0] == "ALMA"
        finally:
            msmd.close()


@pytest.mark.casa
def test_spw_ids_differ_between_blocks_but_names_end_in_ot_name(sim_tiny, tools):
    msmd = tools.msmetadata()
    ids = {}
    for kind, ms in sim_tiny.ms_paths.items():
        msmd.open(str(ms))
        try:
            names = msmd.namesforspws()
            for label in (CS, CONT):
                ot_name = get_spw(label).ot_name
                matching = [i for i, name in enumerate(names) if name.endswith(ot_name)]
                assert len(matching) == 1, (kind, label, names)   # the CH_AVG twin must not match
                ids[kind, label] = matching[0]
                assert matching[0] == sim_tiny.truth["arrays"][kind]["spw_ids"][label]
                assert msmd.nchan(matching[0]) == sim_tiny.truth["spws"][label]["nchan"]
                assert msmd.baseband(matching[0]) == int(ot_name.split("#")[0].split("_")[1])
            assert list(msmd.intents()) == ["OBSERVE_TARGET#ON_SOURCE"]
            assert sorted(msmd.spwsforintent("OBSERVE_TARGET#ON_SOURCE")) == sorted(
                ids[kind, label] for label in (CS, CONT))
            assert list(msmd.fieldnames()) == ["CB68"]
        finally:
            msmd.close()
    for label in (CS, CONT):
        assert ids["12m", label] != ids["7m", label]


@pytest.mark.casa
def test_source_table_has_vsys_and_rest_frequencies(sim_tiny, tools):
    tb = tools.table()
    for kind, ms in sim_tiny.ms_paths.items():
        tb.open(str(ms / "SOURCE"))
        try:
            spw_ids = list(tb.getcol("SPECTRAL_WINDOW_ID"))
            sysvel = tb.getcol("SYSVEL")
            rest = tb.getcol("REST_FREQUENCY")
        finally:
            tb.close()
        assert sorted(spw_ids) == sorted(sim_tiny.truth["arrays"][kind]["spw_ids"].values())
        assert np.allclose(sysvel, 5.0e3)
        for row, spw_id in enumerate(spw_ids):
            label = {v: k for k, v in sim_tiny.truth["arrays"][kind]["spw_ids"].items()}[spw_id]
            assert rest[0, row] == pytest.approx(get_spw(label).restfreq_hz, rel=1e-6)


@pytest.mark.casa
def test_weights_are_inverse_variance_of_the_injected_noise(sim_tiny, tools):
    tb = tools.table()
    weights = {}
    for kind, ms in sim_tiny.ms_paths.items():
        tb.open(str(ms))
        try:
            assert "MODEL_DATA" not in tb.colnames() and "CORRECTED_DATA" not in tb.colnames()
            ddid, data = tb.getcol("DATA_DESC_ID"), tb.getcol("DATA")
            weight, sigma = tb.getcol("WEIGHT"), tb.getcol("SIGMA")
        finally:
            tb.close()
        tb.open(str(ms / "DATA_DESCRIPTION"))
        dd_spw = tb.getcol("SPECTRAL_WINDOW_ID")
        tb.close()
        for label, spw_id in sim_tiny.truth["arrays"][kind]["spw_ids"].items():
            rows = dd_spw[ddid] == spw_id
            stated = sim_tiny.truth["spws"][label]["noise"]["sigma_vis_jy"][kind]
            assert np.allclose(sigma[:, rows], stated, rtol=1e-6)
            assert np.allclose(weight[:, rows], 1.0 / stated ** 2, rtol=1e-5)
            # the sky is unpolarised: XX - YY is pure noise with std sqrt(2) sigma per part
            diff = (data[0, :, rows] - data[1, :, rows]) / math.sqrt(2.0)
            measured = np.sqrt(0.5 * (diff.real.var() + diff.imag.var()))
            assert measured == pytest.approx(stated, rel=0.05)
            weights[kind, label] = stated ** -2
    for label in (CS, CONT):   # same integration and channel width: the dish area ratio squared
        assert weights["12m", label] / weights["7m", label] == pytest.approx((12.0 / 7.0) ** 4, rel=1e-6)


@pytest.mark.casa
def test_lsrk_line_at_vsys_is_inside_each_band(sim_tiny, tools):
    """CASA's own TOPO -> LSRK conversion (ms.cvelfreqs, using the MS times)
    puts the line at vsys in the middle of the window, for both blocks."""
    ms_tool = tools.ms()
    for kind, ms in sim_tiny.ms_paths.items():
        topo = {}
        for label, spw_id in sim_tiny.truth["arrays"][kind]["spw_ids"].items():
            ms_tool.open(str(ms))
            try:
                lsrk = np.asarray(ms_tool.cvelfreqs(spwids=[spw_id], mode="channel", outframe="LSRK"))
            finally:
                ms_tool.close()
            truth = sim_tiny.truth["spws"][label]
            expected = np.asarray(truth["chan_freqs_lsrk_hz"])
            width = truth["chan_width_hz"]
            # cvelfreqs converts at the block's first integration while the simulation used its
            # mid-time; Earth rotation moves the Doppler shift by ~0.1 km/s per hour: << 1 channel
            assert np.max(np.abs(np.sort(lsrk) - expected)) < 0.15 * width
            sky = get_spw(label).restfreq_hz * (1 - 5.0 / C_KMS)
            assert lsrk.min() + 3 * width < sky < lsrk.max() - 3 * width
            topo[label] = np.asarray(sim_tiny.truth["arrays"][kind]["topo_chan_freqs_hz"][label])
        assert not np.allclose(topo[CS], sim_tiny.truth["spws"][CS]["chan_freqs_lsrk_hz"], rtol=1e-6)
    topo12 = sim_tiny.truth["arrays"]["12m"]["topo_chan_freqs_hz"][CS]
    topo7 = sim_tiny.truth["arrays"]["7m"]["topo_chan_freqs_hz"][CS]
    assert abs(topo12[0] - topo7[0]) > 1e6   # observed on different dates, Doppler-tuned


def test_truth_files_are_consistent(sim_tiny):
    from astropy.io import fits

    for label in (CS, CONT):
        truth = sim_tiny.truth["spws"][label]
        cube, cell = model_cube_from_fits(sim_tiny.model_fits[label])
        assert cell == pytest.approx(truth["model_cell_arcsec"])
        assert cube.shape == (truth["model_npix"], truth["model_npix"], truth["nchan"])
        assert integrated_flux_jy_kms(cube, truth["chan_width_kms"]) == pytest.approx(
            truth["integrated_flux_jy_kms"], rel=1e-4)
        assert cube.max() == pytest.approx(truth["peak_jy_per_pixel"], rel=1e-4)
        assert truth_convolved_peak(sim_tiny.model_fits[label], truth["nominal_beam_arcsec"]) == pytest.approx(
            truth["peak_jy_per_beam_nominal"], rel=1e-3)
        with fits.open(sim_tiny.model_fits[label]) as hdul:
            header = hdul[0].header
        assert header["SPECSYS"] == "LSRK" and header["CTYPE3"] == "FREQ"
        freqs = header["CRVAL3"] + (np.arange(truth["nchan"]) + 1 - header["CRPIX3"]) * header["CDELT3"]
        assert np.allclose(freqs, truth["chan_freqs_lsrk_hz"], rtol=0, atol=1.0)
        noise = truth["noise"]["image_rms_natural_jy_per_beam"]
        assert noise["joint"] < min(noise["12m"], noise["7m"])
        assert truth["peak_jy_per_beam_nominal"] == pytest.approx(truth["peak_snr_joint_natural"] * noise["joint"],
                                                                   rel=1e-6)


def test_true_disk_rotates_towards_the_stated_position_angle(sim_tiny):
    truth = sim_tiny.truth["spws"][CS]
    cube, cell = model_cube_from_fits(sim_tiny.model_fits[CS])
    velocities = np.asarray(truth["velocities_kms"])
    npix = cube.shape[0]
    offsets = (np.arange(npix) - npix // 2) * cell
    east, north = -offsets[:, None], offsets[None, :]
    pa = math.radians(truth["rotation"]["redshifted_pa_deg"])
    along = east * math.sin(pa) + north * math.cos(pa)
    mom0 = cube.sum(axis=2)
    mom1 = (cube * velocities).sum(axis=2) / np.maximum(mom0, 1e-30)
    bright = mom0 > 0.1 * mom0.max()
    red = mom1[bright & (along > 0.3)].mean()
    blue = mom1[bright & (along < -0.3)].mean()
    assert blue < truth["vsys_kms"] < red
    spectrum = cube.sum(axis=(0, 1))
    assert spectrum[0] < 1e-3 * spectrum.max() and spectrum[-1] < 1e-3 * spectrum.max()


@pytest.mark.casa
def test_dirty_image_shows_the_stated_noise_and_the_line(sim_tiny, tmp_path):
    """One real tclean (natural, niter=0) of the joint CS data in a subprocess."""
    truth = sim_tiny.truth["spws"][CS]
    arrays = sim_tiny.truth["arrays"]
    script = f"""
import json, numpy as np
from faust_hpc import casa_env
casa_env.configure(log_path={str(tmp_path / 'tclean.casa.log')!r})
tasks, tools = casa_env.casatasks(), casa_env.casatools()
f = {truth['chan_freqs_lsrk_hz']!r}
tasks.tclean(vis={[str(sim_tiny.ms_paths['12m']), str(sim_tiny.ms_paths['7m'])]!r},
             spw={[str(arrays['12m']['spw_ids'][CS]), str(arrays['7m']['spw_ids'][CS])]!r},
             imagename={str(tmp_path / 'dirty')!r}, specmode='cube', outframe='LSRK',
             start=f'{{f[0]}}Hz', width=f'{{f[1] - f[0]}}Hz', nchan=len(f), imsize=128, cell='0.1arcsec',
             gridder='mosaic', weighting='natural', niter=0)
ia = tools.image(); ia.open({str(tmp_path / 'dirty.image')!r}); d = ia.getchunk()[:, :, 0, :]; ia.close()
print(json.dumps({{"rms": d.std(axis=(0, 1)).tolist(), "spectrum": d.max(axis=(0, 1)).tolist()}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = truth["noise"]["image_rms_natural_jy_per_beam"]["joint"]
    # noise in the line-free inner channels (the edge channels have partial coverage)
    model, _ = model_cube_from_fits(sim_tiny.model_fits[CS])
    true_spectrum = model.sum(axis=(0, 1))
    free = [c for c in range(1, truth["nchan"] - 1) if true_spectrum[c] < 1e-3 * true_spectrum.max()]
    assert len(free) >= 4
    assert np.mean([result["rms"][c] for c in free]) == pytest.approx(expected, rel=0.2)
    spectrum = np.asarray(result["spectrum"])
    assert spectrum.max() > 10 * expected
    centre = (truth["nchan"] - 1) / 2
    assert abs(int(np.argmax(spectrum)) - centre) <= 3
    assert not list(tmp_path.glob("casa-*.log"))


def test_demo_runfile_loads_and_overrides_geometry(sim_tiny):
    from faust_hpc.runfile import load_runfile

    spec = load_runfile(sim_tiny.runfile, check_paths=True)
    assert spec.data_dir == sim_tiny.data_dir
    assert spec.product_dir == sim_tiny.outdir / "products"
    assert spec.spw_labels == (CS, CONT)
    assert spec.geometry.imsize <= 128 and spec.geometry.cell_arcsec is not None
    assert "override" in sim_tiny.runfile.read_text()
    for label in spec.spw_labels:
        scales = spec.spw_overrides(label).scales
        assert scales and max(scales) <= spec.geometry.imsize // 6


def test_make_runfile_writes_a_loadable_variant(sim_tiny, tmp_path, make_runfile):
    from faust_hpc.runfile import load_runfile

    path = make_runfile(sim_tiny, tmp_path, imaging={"arrays": ["12m", "7m"], "spws": [CS]},
                        spw={CS: {"nchunks": 1, "automask": {"lownoisethreshold": 2.0}}},
                        scheduler={"retries": 0})
    spec = load_runfile(path)
    assert spec.arrays == ("12m", "7m") and spec.spw_labels == (CS,)
    assert spec.product_dir == tmp_path / "products"
    assert spec.data_dir == sim_tiny.data_dir
    assert spec.spw_overrides(CS).nchunks == 1
    assert spec.spw_overrides(CS).automask == {"lownoisethreshold": 2.0}
    assert spec.scheduler.retries == 0


@pytest.mark.parametrize("kwargs, words", [
    ({"spws": ["216.113GHz_DCOp"]}, ["Setup 1", "not Setup 2"]),
    ({"spws": ["244.9GHz_CS"]}, ["244.936GHz_CS"]),
    ({"size": "huge"}, ["huge", "tiny"]),
    ({"field": "CB86"}, ["CB68"]),
])
def test_bad_input_is_refused_before_any_work(tmp_path, kwargs, words):
    with pytest.raises(UserInputError) as info:
        simulate(tmp_path / "out", **kwargs)
    assert all(word in str(info.value) for word in words)
    assert not (tmp_path / "out").exists()


def test_demo_skips_a_complete_simulation(sim_tiny, capsys):
    from faust_hpc.cli import main

    before = sim_tiny.truth_json.stat().st_mtime_ns
    status = main(["demo", str(sim_tiny.outdir), "--size", "tiny", "--spws", f"{CS},{CONT}", "--simulate-only"])
    assert status == 0
    assert "already complete" in capsys.readouterr().out
    assert sim_tiny.truth_json.stat().st_mtime_ns == before


def test_demo_runs_the_run_command_under_the_venv_mpirun(tmp_path):
    from faust_hpc.cli.demo_cmd import imaging_command, mpi_environment, mpirun_executable

    runfile = tmp_path / "demo.toml"
    command = imaging_command(runfile, 3)
    mpirun = mpirun_executable()
    assert mpirun is not None and Path(mpirun).name == "mpirun"
    assert command[:4] == [mpirun, "-n", "3", "--oversubscribe"]
    assert command[4:] == [sys.executable, "-m", "faust_hpc", "run", str(runfile)]
    if os.geteuid() == 0:
        env = mpi_environment()
        assert env["OMPI_ALLOW_RUN_AS_ROOT"] == env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] == "1"


@pytest.mark.casa
def test_same_seed_gives_the_same_data(sim_tiny, tools, tmp_path):
    from conftest import build_simulation

    again = build_simulation(tmp_path / "again")
    assert again.truth == sim_tiny.truth
    tb = tools.table()
    for kind in ("12m", "7m"):
        columns = []
        for sim in (sim_tiny, again):
            assert sim.ms_paths[kind].name == sim_tiny.ms_paths[kind].name
            tb.open(str(sim.ms_paths[kind]))
            try:
                columns.append((tb.getcol("DATA"), tb.getcol("UVW"), tb.getcol("WEIGHT")))
            finally:
                tb.close()
        for first, second in zip(*columns):
            assert np.array_equal(first, second)


def test_beam_convolution_conserves_flux_in_jy_per_beam():
    """A point source of S Jy -> S Jy/beam; a Gaussian of FWHM a -> S b^2/(a^2 + b^2)."""
    from faust_hpc.simulate.skymodel import ModelGrid, convolve_to_beam, gaussian_blob

    grid = ModelGrid(129, 0.05)
    point = np.zeros((129, 129, 1))
    point[64, 64, 0] = 2.0
    assert convolve_to_beam(point, grid.cell_arcsec, 0.4).max() == pytest.approx(2.0, rel=1e-6)
    blob = gaussian_blob(grid, 0.6)[:, :, None]
    blob *= 3.0 / blob.sum()
    assert convolve_to_beam(blob, grid.cell_arcsec, 0.4).max() == pytest.approx(3.0 * 0.16 / (0.36 + 0.16), rel=1e-3)


def test_spw_ids_differ_even_for_a_single_window():
    from faust_hpc.simulate.observe import spw_layout
    from faust_hpc.simulate.windows import plan_windows

    for labels in ([CS], [CS, CONT], ["244.049GHz_H2CS", CS, "245.606GHz_HC3N", CONT]):
        windows = plan_windows([get_spw(label) for label in labels], 5.0, 20, 20)
        ids = {kind: {w.label: i for i, (w, full) in enumerate(spw_layout(kind, windows)) if full}
               for kind in ("12m", "7m")}
        assert all(ids["12m"][label] != ids["7m"][label] for label in labels)


def test_windows_keep_the_real_channel_width_centred_on_vsys():
    from faust_hpc.simulate.windows import plan_windows

    line, cont = plan_windows([get_spw(CS), get_spw(CONT)], 5.0, 20, 64)
    assert line.nchan == 20 and cont.nchan == 64
    assert np.diff(line.freqs_lsrk_hz) == pytest.approx(np.full(19, get_spw(CS).chan_width_hz))
    assert line.velocities_kms.mean() == pytest.approx(5.0, abs=1e-9)
    assert line.name.endswith(get_spw(CS).ot_name) and line.name.startswith("X0000000000#ALMA_RB_06#")
    assert cont.ch_avg_name.endswith("#CH_AVG") and not cont.ch_avg_name.endswith(get_spw(CONT).ot_name)
