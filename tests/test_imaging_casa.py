"""The imaging engine on real CASA with the simulated data (``sim_tiny``).

One chunked default pipeline run (``faust-hpc image``, i.e. the executor's
prepare / chunk / finalize units) is shared by the module; the unchunked run
reuses its sum-of-weights stamp. Figures worth reading in the test log are
printed (run with ``-s``) and attached with ``record_property``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from faust_hpc.errors import PrerequisiteError, UserInputError

pytestmark = pytest.mark.casa

LABEL = "244.936GHz_CS"
C_KMS = 299_792.458


@pytest.fixture(scope="module")
def chunked_run(sim_tiny, tmp_path_factory, casa):
    """The default pipeline (joint, Briggs 0.5, chunked as the demo run file
    says) for one narrow SPW, through ``faust-hpc image``."""
    from faust_hpc.execute import config_for
    from faust_hpc.runfile import load_runfile
    from faust_hpc.simulate.runfiles import write_runfile_variant

    tmp = tmp_path_factory.mktemp("imaging_chunked")
    runfile = write_runfile_variant(sim_tiny, tmp / "run.toml", imaging={"spws": [LABEL]})
    cmd = [sys.executable, "-m", "faust_hpc", "image", str(runfile), "--no-products"]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spec = load_runfile(runfile)
    key = spec.image_keys()[0]
    config = config_for(spec, key)
    return SimpleNamespace(spec=spec, key=key, config=config, base=config.get_imagebase(ext=spec.ext),
                           stdout=proc.stdout, tmp=tmp)


def _freqs(imagename):
    from faust_hpc.imaging import get_freq_axis_from_image

    faxis, unit = get_freq_axis_from_image(imagename)
    assert unit == "Hz"
    return faxis


def _pixels(imagename):
    from faust_hpc.imaging import ImageManager

    with ImageManager(imagename) as ia:
        return np.asarray(ia.getchunk(), dtype=float)[:, :, 0, :]


def test_default_pipeline_writes_the_documented_fits(chunked_run, sim_tiny):
    from astropy.io import fits

    fits_path = Path(f"{chunked_run.base}.image.pbcor.common.fits")
    assert fits_path.name == f"CB68_{LABEL}_joint_0.5_clean.image.pbcor.common.fits"
    assert fits_path.parent == Path(chunked_run.spec.product_dir) / "images" / "CB68"
    with fits.open(fits_path) as hdul:
        assert len(hdul) == 1, "per-plane beams table present: not smoothed to one common beam"
        header, data = hdul[0].header, hdul[0].data
    nchan_truth = sim_tiny.truth["spws"][LABEL]["nchan"]
    assert data.ndim == 4 and data.shape[0] == 1      # (STOKES, FREQ, Dec, RA) as the original's
    data = data[0]
    assert data.shape[1:] == (128, 128)
    assert nchan_truth - 2 <= data.shape[0] <= nchan_truth
    assert header["BMAJ"] > 0 and header["BMIN"] > 0 and "CASAMBM" not in header
    assert header["SPECSYS"] == "LSRK"
    # every product of the chunked run's frozen list is in place, no temporaries left
    names = os.listdir(os.path.dirname(chunked_run.base))
    assert not [n for n in names if n.startswith(".tmp-")]
    assert f"CB68_{LABEL}_joint_0.5_clean.chunks.json" in names
    assert f"CB68_{LABEL}_chunk1_joint_0.5_clean.image" in names
    # the primary-beam mask (pblimit 0.2 for joint) survives the common-beam smoothing
    from faust_hpc.imaging.postprocess import image_has_mask

    chunk0 = chunked_run.base.replace(f"_{LABEL}_", f"_{LABEL}_chunk0_")
    for name in (f"{chunked_run.base}.image.common", f"{chunked_run.base}.image.pbcor.common",
                 f"{chunk0}.image.pbcor.common"):
        assert image_has_mask(name), f"{name} has no PB mask"


def test_flux_peak_and_residual_against_truth(chunked_run, sim_tiny, record_property):
    from astropy.io import fits

    from faust_hpc.imaging import check_max_residual
    from faust_hpc.simulate.truth import model_cube_from_fits, truth_convolved_peak

    truth = sim_tiny.truth["spws"][LABEL]
    model = _pixels(f"{chunked_run.base}.model")
    freqs = _freqs(f"{chunked_run.base}.model")
    tfreqs = np.asarray(truth["chan_freqs_lsrk_hz"])
    matched = [int(np.argmin(np.abs(tfreqs - f))) for f in freqs]
    assert len(set(matched)) == len(matched)
    cube, cell = model_cube_from_fits(sim_tiny.model_fits[LABEL])
    radius = 2.0  # arcsec: the disk (FWHM 1.5") and its wings

    def flux_within(pixels, cell_arcsec):
        n = pixels.shape[0]
        x = (np.arange(n) - n / 2) * cell_arcsec
        r = np.hypot(*np.meshgrid(x, x, indexing="ij"))
        return float(pixels[r < radius].sum()) * truth["chan_width_kms"]

    model_flux = flux_within(model, 0.1)
    true_flux = flux_within(cube[:, :, matched], cell)
    with fits.open(f"{chunked_run.base}.image.pbcor.common.fits") as hdul:
        header, data = hdul[0].header, hdul[0].data
    peak = float(np.nanmax(data))
    true_peak = truth_convolved_peak(sim_tiny.model_fits[LABEL], header["BMAJ"] * 3600, header["BMIN"] * 3600,
                                     header["BPA"])
    resid = check_max_residual(chunked_run.base, sigma=5.5)
    print(f"\nmodel flux {model_flux:.3f} / truth {true_flux:.3f} Jy km/s = {model_flux / true_flux:.3f}; "
          f"peak {peak:.4f} / truth convolved {true_peak:.4f} Jy/beam = {peak / true_peak:.3f}; "
          f"max residual {resid['max_sigma']:.2f} sigma")
    record_property("model_flux_ratio", round(model_flux / true_flux, 4))
    record_property("peak_ratio", round(peak / true_peak, 4))
    record_property("max_residual_sigma", round(resid["max_sigma"], 3))
    assert abs(model_flux / true_flux - 1) < 0.10
    assert abs(peak / true_peak - 1) < 0.20
    assert resid["max_sigma"] < 5.5


def test_row1_common_coverage_leaves_out_the_last_covered_channel(chunked_run, record_property):
    """The original images ``abs(ix_hi - ix_lo)`` channels from the first fully
    covered one: the last fully covered channel is not in the products."""
    from astropy.io import fits

    from faust_hpc.imaging.chunking import common_coverage, read_chunk_list, read_sumwt

    config = chunked_run.config
    sumwt, faxis = read_sumwt(config.tinyimg_imagebase)
    good = np.flatnonzero(sumwt > 0.95 * np.nanmedian(sumwt))
    lo, hi = int(good.min()), int(good.max())
    sel, chunks = read_chunk_list(config.chunk_list_path(chunked_run.spec.ext))
    record_property("covered_channels", int(hi - lo + 1))
    record_property("imaged_channels", int(sel.nchan))
    print(f"\ncommon coverage: {hi - lo + 1} channels fully covered, {sel.nchan} imaged")
    assert sel.nchan == sum(c.nchan for c in chunks) == abs(hi - lo)
    assert sel.start_hz == pytest.approx(float(min(faxis[lo], faxis[hi])), abs=1e-3)
    with fits.open(f"{chunked_run.base}.image.pbcor.common.fits") as hdul:
        assert hdul[0].header["NAXIS3"] == abs(hi - lo)
    # the documented opt-in images it too
    assert common_coverage(config.tinyimg_imagebase, include_last=True).nchan == hi - lo + 1


def test_row3_common_beam_is_the_largest_chunk_beam_times_1p01(chunked_run, record_property):
    from astropy.io import fits

    from faust_hpc.imaging import ImageManager

    chunked = chunked_run.config.load_frozen_chunks(chunked_run.spec.ext)
    beams = []
    for cc in chunked:
        with ImageManager(f"{cc.get_imagebase(chunked_run.spec.ext)}.image") as ia:
            beams.append(ia.commonbeam())
    largest = max(beams, key=lambda b: b["major"]["value"] * b["minor"]["value"])
    assert largest["major"]["unit"] == largest["minor"]["unit"] == "arcsec"
    with fits.open(f"{chunked_run.base}.image.pbcor.common.fits") as hdul:
        head = hdul[0].header
    record_property("bmaj_over_largest_chunk_bmaj", round(head["BMAJ"] * 3600 / largest["major"]["value"], 6))
    assert head["BMAJ"] * 3600 == pytest.approx(largest["major"]["value"] * 1.01, rel=1e-6)   # was x 1.003
    assert head["BMIN"] * 3600 == pytest.approx(largest["minor"]["value"] * 1.01, rel=1e-6)


def test_rows4_5_8_exported_fits_are_4d_with_archive_keywords(chunked_run):
    """``.image.pbcor.common.fits``, ``.mask.fits`` and ``.pb.fits``: 4-D
    (RA, Dec, FREQ, STOKES), OBJECT = field, INSTRUME = ALMA, DATAMIN/DATAMAX."""
    from astropy.io import fits

    for ext in ("image.pbcor.common.fits", "mask.fits", "pb.fits"):
        path = Path(f"{chunked_run.base}.{ext}")
        assert path.exists(), f"{path.name} not exported"
        with fits.open(path) as hdul:
            head, data = hdul[0].header, hdul[0].data
        assert head["NAXIS"] == 4, path.name
        assert [head[f"CTYPE{i}"].split("-")[0] for i in (1, 2, 3, 4)] == ["RA", "DEC", "FREQ", "STOKES"]
        assert head["OBJECT"] == "CB68" and head["INSTRUME"] == "ALMA"
        assert head["DATAMIN"] == pytest.approx(float(np.nanmin(data)), rel=1e-6, abs=1e-12)
        assert head["DATAMAX"] == pytest.approx(float(np.nanmax(data)), rel=1e-6, abs=1e-12)
    assert not [n for n in os.listdir(os.path.dirname(chunked_run.base)) if n.startswith(".tmp-")]


def test_chunked_equals_unchunked(chunked_run, record_property):
    """Same spectral axis (no channel missing or doubled at the seams) and
    per-channel differences well below the noise."""
    from faust_hpc.execute import config_for

    spec = chunked_run.spec
    config = config_for(spec, chunked_run.key)
    config.run_pipeline(ext="unchunked", use_chunking=False, nomask_sigma=spec.thresholds.nomask_sigma,
                        seedmask_sigma=spec.thresholds.seedmask_sigma, clean_sigma=spec.thresholds.clean_sigma)
    full = config.get_imagebase(ext="unchunked")
    f_chunked, f_full = _freqs(f"{chunked_run.base}.image"), _freqs(f"{full}.image")
    assert f_chunked.size == f_full.size
    np.testing.assert_allclose(f_chunked, f_full, rtol=0, atol=1e-3)          # Hz
    steps = np.diff(f_chunked)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)                   # regular: no seam gap/overlap
    a, b = _pixels(f"{chunked_run.base}.image"), _pixels(f"{full}.image")
    rms = config.rms
    per_chan = np.nanmax(np.abs(a - b), axis=(0, 1)) / rms
    print(f"\nchunked vs unchunked: max|diff|/rms per channel = {np.round(per_chan, 3).tolist()}")
    record_property("chunk_vs_full_max_diff_over_rms", round(float(per_chan.max()), 4))
    assert float(np.median(per_chan)) < 0.2
    assert float(per_chan.max()) < 1.0


def test_restart_one_chunk_rebuilds_full_cube(chunked_run):
    config = chunked_run.config
    chunked = config.load_frozen_chunks(chunked_run.spec.ext)
    ext = chunked_run.spec.ext
    # the cookbook: find the chunk of a channel, clean it deeper, postprocess only it
    target = chunked.get_chunk_from_channel(chunked.nchan_total - 1)
    k = target.chunk.index
    assert k == chunked.nchunks - 1
    before_full = _pixels(f"{chunked_run.base}.model")
    before_mtime = os.stat(f"{chunked_run.base}.image.pbcor.common.fits").st_mtime_ns
    target.clean_line(ext=ext, restart=True, sigma=2.5)
    chunked.postprocess(ext=ext, use_existing_except=[k], make_hanning=True)
    hanning = f"{chunked_run.base}.image.common.hanning"
    assert _pixels(hanning).shape == _pixels(f"{chunked_run.base}.image.common").shape
    after_full = _pixels(f"{chunked_run.base}.model")
    assert after_full.shape == before_full.shape
    lo = target.chunk.start_chan_ix
    np.testing.assert_array_equal(after_full[:, :, :lo], before_full[:, :, :lo])   # other chunks kept
    assert not np.array_equal(after_full[:, :, lo:], before_full[:, :, lo:])       # this one recleaned
    np.testing.assert_array_equal(_pixels(f"{target.get_imagebase(ext)}.model"), after_full[:, :, lo:])
    assert os.stat(f"{chunked_run.base}.image.pbcor.common.fits").st_mtime_ns > before_mtime


def test_array_kinds_select_the_right_execution_blocks(sim_tiny, casa, tmp_path):
    from faust_hpc.imaging import DataSet, ImageConfig, ImageManager

    ms12, ms7 = str(sim_tiny.ms_paths["12m"]), str(sim_tiny.ms_paths["7m"])
    vis = {kind: DataSet("CB68", setup=2, kind=kind, data_dir=sim_tiny.data_dir).vis
           for kind in ("joint", "12m", "7m")}
    assert vis["12m"] == [ms12] and vis["7m"] == [ms7] and sorted(vis["joint"]) == sorted([ms12, ms7])
    arrays = sim_tiny.truth["arrays"]
    beams = {}
    for kind, cell in (("12m", 0.1), ("7m", 0.5)):
        config = ImageConfig.from_name("CB68", LABEL, kind=kind, data_dir=sim_tiny.data_dir, prod_dir=tmp_path,
                                       cell_arcsec=cell, imsize=64)
        assert config.spw_ids == [str(arrays[kind]["spw_ids"][LABEL])]     # ids differ between EBs
        config.make_dirty_cube()
        with ImageManager(f"{config.dirty_imagebase}.image") as ia:
            beam = ia.commonbeam()
        beams[kind] = float(beam["major"]["value"])
    print(f"\ndirty beam major axis: 12m {beams['12m']:.2f}\", 7m {beams['7m']:.2f}\"")
    assert beams["12m"] < 1.0 < 3.0 < beams["7m"]


def test_cutout_has_requested_velocity_width(sim_tiny, casa, tmp_path):
    """fullcube=False images a line_vwin window about vsys on the native grid."""
    from faust_hpc.imaging import ImageConfig

    config = ImageConfig.from_name("CB68", LABEL, fullcube=False, data_dir=sim_tiny.data_dir, prod_dir=tmp_path,
                                   cell_arcsec=0.1, imsize=128)
    config.line_vwin = "1km/s"
    chunked = config.prepare_chunks(nchunks=1, ext="cut")
    chunk = chunked[0]
    chunk.make_dirty_cube()
    freqs = _freqs(f"{chunk.dirty_imagebase}.image")
    rest = config.spw.restfreq_hz
    vel = (1 - freqs / rest) * C_KMS
    dv = abs(vel[1] - vel[0])
    width = freqs.size * dv
    print(f"\ncut-out: {freqs.size} channels x {dv:.4f} km/s = {width:.3f} km/s about {vel.mean():.3f} km/s")
    assert abs(width - 1.0) <= dv / 2 + 1e-6
    assert abs(vel.mean() - sim_tiny.truth["vsys_kms"]) <= dv


def test_bad_input_names_the_file_or_stage(sim_tiny, casa, tmp_path):
    from faust_hpc.execute import run_unit
    from faust_hpc.imaging import ImageConfig
    from faust_hpc.runfile import load_runfile
    from faust_hpc.simulate.runfiles import write_runfile_variant
    from faust_hpc.units import Unit

    # an SPW of the Setup that the measurement sets do not hold
    config = ImageConfig.from_name("CB68", "245.606GHz_HC3N", data_dir=sim_tiny.data_dir, prod_dir=tmp_path)
    with pytest.raises(UserInputError, match=r"245.606GHz_HC3N.*not found in measurement set .*uid___") as err:
        config.make_tiny_image_stamp()
    assert str(err.value).count("\n") == 0
    # a missing measurement set directory
    missing = ImageConfig.from_name("CB68", LABEL, data_dir=tmp_path / "nowhere", prod_dir=tmp_path)
    with pytest.raises(UserInputError, match=str(tmp_path / "nowhere" / "CB68-Setup2")):
        missing.make_dirty_cube()
    # a chunk unit before its prepare unit
    runfile = write_runfile_variant(sim_tiny, tmp_path / "run.toml", imaging={"spws": [LABEL]})
    spec = load_runfile(runfile)
    key = spec.image_keys()[0]
    unit = Unit(id=key.unit_id("chunk00"), kind="chunk", key=key, chunk_index=0, nchunks=2)
    with pytest.raises(PrerequisiteError, match="prepare"):
        run_unit(spec, unit, tmp_path / "work")
    fin = Unit(id=key.unit_id("finalize"), kind="finalize", key=key)
    with pytest.raises(PrerequisiteError, match="prepare"):
        run_unit(spec, fin, tmp_path / "work")
    # the CLI: one line, exit status 2, before any work
    bad = write_runfile_variant(sim_tiny, tmp_path / "bad.toml", imaging={"spws": ["245.606GHz_HC3N"]})
    proc = subprocess.run([sys.executable, "-m", "faust_hpc", "image", str(bad)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("faust-hpc: error:")]
    assert len(lines) == 1 and "245.606GHz_HC3N" in lines[0] and ".ms" in lines[0]
    assert not (tmp_path / "products" / "images" / "CB68").exists() or not any(
        (tmp_path / "products" / "images" / "CB68").iterdir())


def test_killed_stage_leaves_no_finished_looking_product(sim_tiny, casa, tmp_path):
    """SIGKILL during tclean: only ``.tmp-`` names exist; a re-run finishes the job."""
    import signal
    import time

    from faust_hpc.imaging import ImageConfig

    script = f"""
import sys
from faust_hpc import casa_env
casa_env.configure(log_path={str(tmp_path / 'killed.casa.log')!r})
from faust_hpc.imaging import ImageConfig
config = ImageConfig.from_name("CB68", {LABEL!r}, data_dir={str(sim_tiny.data_dir)!r},
                               prod_dir={str(tmp_path)!r}, cell_arcsec=0.1, imsize=128)
config.scales = [0, 5, 16]
chunk = config.prepare_chunks(nchunks=4, ext="clean")[0]
chunk.make_dirty_cube()
print("dirty done", flush=True)
chunk.clean_line_nomask(sigma=1.0)   # deep: long enough to be killed mid-run
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    image_dir = tmp_path / "images" / "CB68"
    try:
        assert proc.stdout.readline().strip() == "dirty done"
        deadline = time.time() + 120
        while time.time() < deadline and not list(image_dir.glob(".tmp-*nomask*_chunk0_joint_0.5_nomask.psf")):
            time.sleep(0.2)
        time.sleep(0.5)
        assert proc.poll() is None, "the stage finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    names = sorted(p.name for p in image_dir.iterdir())
    assert [n for n in names if n.startswith(".tmp-") and "chunk0_joint_0.5_nomask" in n]
    assert not [n for n in names if n.startswith("CB68_") and "_nomask." in n], names
    # a re-run (another process) removes the leftovers and publishes the products
    config = ImageConfig.from_name("CB68", LABEL, data_dir=sim_tiny.data_dir, prod_dir=tmp_path,
                                   cell_arcsec=0.1, imsize=128)
    config.scales = [0, 5, 16]
    chunk = config.load_frozen_chunks("clean")[0]
    chunk.clean_line_nomask(sigma=4.5)
    names = sorted(p.name for p in image_dir.iterdir())
    assert not [n for n in names if n.startswith(".tmp-")], names
    assert f"CB68_{LABEL}_chunk0_joint_0.5_nomask.image" in names


def test_concatenation_keeps_each_chunks_pixel_mask(casa, tmp_path):
    """The final cube's PB blanking comes from the chunks' masks: rebuilt plane
    by plane in the right place even when imageconcat reorders the inputs."""
    from faust_hpc.imaging.postprocess import _restore_concatenated_mask, concat_images

    ia = casa.casatools().image()
    names = []
    for i in range(3):
        name = str(tmp_path / f"chunk{i}.im")
        ia.fromshape(name, [6, 6, 1, 4], overwrite=True)
        csys = ia.coordsys()
        ref = csys.referencevalue(format="n")["numeric"]
        ref[3] += 4 * i * csys.increment(format="n")["numeric"][3]
        csys.setreferencevalue(value=ref)
        ia.setcoordsys(csys.torecord())
        ia.putchunk(np.full((6, 6, 1, 4), float(i + 1)))
        ia.calcmask(f'"{name}" > 0', name="mask0")
        mask = ia.getchunk(getmask=True)
        mask[: i + 1] = False  # chunk i blanks its first i+1 rows
        ia.putregion(pixelmask=mask)
        ia.close()
        names.append(name)
    out = concat_images(list(reversed(names)), str(tmp_path / "full.im"))  # imageconcat sorts them back
    ia.open(out)
    ia.maskhandler("delete", "mask0")  # as seen on tclean chunks: no default mask after concatenation
    ia.close()
    _restore_concatenated_mask(names, out)
    ia.open(out)
    try:
        assert list(ia.maskhandler("default")) == ["mask0"]
        data, mask = ia.getchunk(), ia.getchunk(getmask=True)
    finally:
        ia.close()
    for i in range(3):
        planes = slice(4 * i, 4 * i + 4)
        assert np.all(data[:, :, 0, planes] == i + 1)
        assert not mask[: i + 1, :, 0, planes].any() and mask[i + 1:, :, 0, planes].all()
