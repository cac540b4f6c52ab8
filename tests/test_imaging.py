"""Imaging engine logic that needs no CASA: names, chunk arithmetic, the
frozen chunk list, configuration defaults, cleanup and cut-out windows."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from faust_hpc.errors import PrerequisiteError, UserInputError
from faust_hpc.imaging import (ALL_SPWS, ChunkConfig, ChunkedConfigSet, DataSet, ImageConfig, SpectralSelection,
                               read_chunk_list, write_chunk_list)
from faust_hpc.imaging.chunking import make_chunks, split_channels, window_selection


def make_config(tmp_path: Path, label: str = "244.936GHz_CS", kind: str = "joint", **kw) -> ImageConfig:
    return ImageConfig.from_name("CB68", label, kind=kind, prod_dir=tmp_path / "prod",
                                 data_dir=tmp_path / "data", **kw)


def test_imagebase_follows_documented_convention(tmp_path):
    config = make_config(tmp_path)
    base = tmp_path / "prod" / "images" / "CB68" / "CB68_244.936GHz_CS_joint_0.5"
    assert config.get_imagebase() == str(base)
    assert config.get_imagebase("clean") == f"{base}_clean"
    assert config.get_imagebase(["5kms", "clean"]) == f"{base}_5kms_clean"
    assert config.dirty_imagebase == f"{base}_dirty"
    nat = make_config(tmp_path, kind="12m", weighting="natural")
    assert nat.get_imagebase("clean").endswith("CB68_244.936GHz_CS_12m_natural_clean")
    chunk = ChunkConfig("244.93GHz", 10, 5, 2, "141kHz")
    chunked = ImageConfig(config.dset, config.spw, chunk=chunk, prod_dir=tmp_path / "prod")
    # the chunk tag follows the label, as the original (Spw.with_chunk renames the label)
    assert chunked.get_imagebase("clean") == str(base).replace("_CS_", "_CS_chunk2_") + "_clean"
    # the sum-of-weights stamp and the frozen list belong to the full cube
    assert chunked.tinyimg_imagebase == f"{base}_tinyimg"
    assert chunked.chunk_list_path("clean") == f"{base}_clean.chunks.json"


def test_documented_attributes_and_7m_automask(tmp_path):
    joint = make_config(tmp_path)
    assert joint.scales == [0, 15, 45, 135]          # documented pixels at the documented cell
    assert joint.mask_ang_scales == [0, 1, 3]
    assert (joint.smallscalebias, joint.gain, joint.cyclefactor) == (-1.0, 0.05, 2.0)
    assert joint.uvtaper is None and joint.line_vwin == "20km/s"
    assert joint.preserve_all_intermediate_products is False
    assert joint.autom_kwargs["usemask"] == "auto-multithresh"
    assert joint.autom_kwargs["sidelobethreshold"] == 2.0 and joint.autom_kwargs["minbeamfrac"] == 0.001
    seven = make_config(tmp_path, kind="7m")
    assert seven.autom_kwargs["sidelobethreshold"] == 1.25 and seven.autom_kwargs["negativethreshold"] == 10.0
    joint.autom_kwargs["negativethreshold"] = 8     # instance copies: no global mutation
    assert make_config(tmp_path).autom_kwargs["negativethreshold"] == 7.0
    joint.rms = 0.001
    assert joint.rms == 0.001


def test_scales_follow_an_overridden_cell(tmp_path):
    """A run file's coarser cell keeps the multiscale sizes in arcsec."""
    config = make_config(tmp_path, cell_arcsec=0.1, imsize=128)
    assert config.dset.cell == "0.1arcsec" and config.dset.imsize == [128, 128]
    assert config.scales == [0, 5, 16, 49]
    assert config.nomask_scale_upper_limit == pytest.approx(60 * 0.036 / 0.1)


def test_geometry_defaults_from_documented_rules(tmp_path):
    dset = DataSet("CB68", setup=2, kind="joint", data_dir=tmp_path)
    assert dset.cell == "0.036arcsec" and dset.gridder == "mosaic" and dset.pblimit == 0.2
    seven = DataSet("CB68", setup=2, kind="7m", data_dir=tmp_path)
    assert seven.gridder == "standard" and seven.pblimit == -0.01
    assert seven.imsize[0] < dset.imsize[0] * 2


def test_split_channels_and_conversions_round_trip():
    assert split_channels(10, 3) == [(0, 3), (3, 3), (6, 4)]
    assert split_channels(12, 4) == [(0, 3), (3, 3), (6, 3), (9, 3)]
    assert split_channels(5, 5) == [(i, 1) for i in range(5)]
    with pytest.raises(ValueError):
        split_channels(3, 4)
    sel = SpectralSelection(244.9e9, 141e3, 477)
    chunks = make_chunks(sel, 4)
    assert [c.nchan for c in chunks] == [119, 119, 119, 120]
    assert sum(c.nchan for c in chunks) == 477
    full = [ix for c in chunks for ix in c.fullcube_chan_indices]
    assert full == list(range(477))                   # no channel missing or doubled
    for c in chunks:
        for ix in c.fullcube_chan_indices:
            assert c.convert_chunk_chan_to_full(c.convert_full_chan_to_chunk(ix)) == ix
        assert c.selection.start_hz == pytest.approx(sel.start_hz + c.start_chan_ix * sel.width_hz, abs=1e-5)
    assert chunks[2].convert_full_chan_to_chunk(255) == 17      # the cookbook's example
    assert chunks[2].convert_chunk_chan_to_full(17) == 255
    with pytest.raises(IndexError):
        chunks[0].convert_full_chan_to_chunk(200)


def test_chunked_config_set_indexing(tmp_path):
    config = make_config(tmp_path)
    chunks = make_chunks(SpectralSelection(244.9e9, 141e3, 477), 4)
    cset = config._chunk_set(chunks)
    assert isinstance(cset, ChunkedConfigSet)
    assert cset.nchunks == 4 and cset.nchan_total == 477 and len(cset) == 4
    assert [c.chunk.index for c in cset] == [0, 1, 2, 3]
    assert [c.chunk.index for c in cset[:2]] == [0, 1] and cset[-1].chunk.index == 3
    assert cset.get_chunk_from_channel(255).chunk.index == 2
    assert cset.get_chunk_from_channel(0).chunk.index == 0
    assert cset.get_chunk_from_channel(476).chunk.index == 3
    with pytest.raises(IndexError):
        cset.get_chunk_from_channel(477)
    assert cset.get_imagebase("clean") == config.get_imagebase("clean")
    # chunk copies are independent (the cookbook sets per-chunk RMS)
    cset[3].rms = 0.006
    assert cset[2]._rms is None


def test_frozen_chunk_list_round_trip(tmp_path):
    sel = SpectralSelection(244930130838.46384, 141113.28125, 19)
    chunks = make_chunks(sel, 2)
    path = str(tmp_path / "x_clean.chunks.json")
    write_chunk_list(path, sel, chunks)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    sel2, chunks2 = read_chunk_list(path)
    assert sel2 == sel and chunks2 == chunks
    assert json.loads(Path(path).read_text())["nchan_total"] == 19
    with pytest.raises(PrerequisiteError, match="prepare"):
        read_chunk_list(str(tmp_path / "missing.chunks.json"))


def test_load_frozen_chunks_needs_prepare(tmp_path):
    with pytest.raises(PrerequisiteError, match="prepare"):
        make_config(tmp_path).load_frozen_chunks("clean")


def test_cutout_window_has_requested_width():
    rest = 244.9355565e9
    width = 141113.28125
    coverage = SpectralSelection(244.9200e9, width, 200)
    sel = window_selection(coverage, rest, 5.0, 5.0)
    dv = width / rest * 299792.458
    assert abs(sel.nchan * dv - 5.0) <= dv / 2
    centre = sel.start_hz + (sel.nchan - 1) / 2 * width
    v_centre = (1 - centre / rest) * 299792.458
    assert abs(v_centre - 5.0) <= dv
    # aligned to the native grid
    assert ((sel.start_hz - coverage.start_hz) / width) == pytest.approx(round((sel.start_hz - coverage.start_hz) / width))


def test_copied_spw_gets_its_own_names(tmp_path):
    spw = ALL_SPWS["244.936GHz_CS"].copy()
    spw.mol_name = "XY"
    spw.restfreq = "244.93200GHz"
    dset = DataSet("CB68", setup=spw.setup, kind="joint", data_dir=tmp_path)
    config = ImageConfig(dset, spw, fullcube=False, prod_dir=tmp_path)
    config.line_vwin = "5km/s"
    assert config.get_imagebase("5kms_clean").endswith("CB68_244.932GHz_XY_joint_0.5_5kms_clean")
    assert ALL_SPWS["244.936GHz_CS"].mol_name == "CS"


def test_remove_all_files_noninteractive(tmp_path, monkeypatch):
    config = make_config(tmp_path)
    base = config.get_imagebase()
    keep = Path(base.replace("_0.5", "_0.55") + "_clean.image")   # another weighting: not ours
    chunk0 = base.replace("_CS_", "_CS_chunk0_") + "_clean.image"
    for name in (f"{base}_clean.image", chunk0, f"{base}_clean.image.pbcor.common.fits"):
        Path(name).mkdir(parents=True) if name.endswith(".image") else Path(name).write_text("x")
    keep.mkdir(parents=True)
    monkeypatch.setattr("sys.stdin", None)          # batch job: no prompt, so no deletion unasked (issue 10)
    with pytest.raises(UserInputError, match="confirm=False"):
        config.remove_all_files(confirm=True, remove_chunks=False)
    assert Path(f"{base}_clean.image").exists()
    removed = config.remove_all_files(confirm=False, remove_chunks=False)
    assert chunk0 not in removed and len(removed) == 2
    assert keep.exists() and Path(chunk0).exists()
    config.remove_all_files(confirm=False)
    assert not Path(chunk0).exists() and keep.exists()


def test_bad_input_without_casa(tmp_path):
    with pytest.raises(UserInputError, match="unknown SPW label"):
        make_config(tmp_path, label="244.936GHz_XX")
    with pytest.raises(UserInputError, match="array kind"):
        make_config(tmp_path, kind="9m")
    with pytest.raises(UserInputError, match="weighting"):
        make_config(tmp_path, weighting="robust")
    config = make_config(tmp_path)
    with pytest.raises(UserInputError, match=str(tmp_path / "data" / "CB68-Setup2")):
        config.dset.vis
    (tmp_path / "data" / "CB68-Setup2").mkdir(parents=True)
    with pytest.raises(UserInputError, match="no measurement set matching"):
        config.dset.vis
    # stages before their prerequisites name the stage to run first (no CASA needed to say so)
    with pytest.raises(PrerequisiteError, match="make_dirty_cube"):
        config.clean_line_nomask()
    with pytest.raises(PrerequisiteError, match="clean_line_nomask"):
        config.make_seed_mask()
    with pytest.raises(PrerequisiteError, match="clean_line"):
        config.postprocess(ext="clean")
    with pytest.raises(PrerequisiteError, match="make_seed_mask"):
        config.clean_line(ext="clean")
    with pytest.raises(PrerequisiteError, match="nothing to restart"):
        config.clean_line(ext="clean", restart=True)
    config.rms = 0.01
    with pytest.raises(PrerequisiteError, match="make_tiny_image_stamp"):
        config.clean_line(ext="clean", mask_method="auto-multithresh")


def test_executor_names_partial_outputs_of_a_crashed_unit(tmp_path):
    from faust_hpc.execute import config_for, partial_outputs, weighting_value
    from faust_hpc.runfile import load_runfile
    from faust_hpc.units import Unit

    run = tmp_path / "run.toml"
    run.write_text('[run]\ndata_dir = "data"\nproduct_dir = "products"\n'
                   '[imaging]\nfields = ["CB68"]\nsetup = 2\nspws = ["244.936GHz_CS"]\n'
                   'cell_arcsec = 0.1\nimsize = 128\n'
                   '[spw."244.936GHz_CS"]\nrms = 0.002\ngain = 0.03\nscales = [0, 5]\n'
                   'automask = { lownoisethreshold = 2.0 }\n')
    spec = load_runfile(run, check_paths=False)
    key = spec.image_keys()[0]
    config = config_for(spec, key)
    assert (config.rms, config.gain, config.scales) == (0.002, 0.03, [0, 5])
    assert config.autom_kwargs["lownoisethreshold"] == 2.0 and config.autom_kwargs["noisethreshold"] == 5.0
    assert config.dset.cell == "0.1arcsec" and weighting_value(key.weighting) == 0.5
    d = Path(config.get_imagebase()).parent
    stem = Path(config.get_imagebase()).name
    chunk_stem = stem.replace("_CS_", "_CS_chunk{}_")
    crashed = [d / f".tmp-123-clean_clean-{chunk_stem.format(1)}_clean.model", d / f".tmp-9-{stem}_clean.image.pbcor"]
    other = d / f".tmp-123-clean_clean-{chunk_stem.format(0)}_clean.model"
    for p in crashed + [other]:
        p.mkdir(parents=True)
    chunk1 = Unit(id=key.unit_id("chunk01"), kind="chunk", key=key, chunk_index=1, nchunks=2)
    assert partial_outputs(spec, chunk1) == [str(crashed[0])]
    fin = Unit(id=key.unit_id("finalize"), kind="finalize", key=key)
    assert str(crashed[1]) in partial_outputs(spec, fin)
    # moments and QA temporaries are named by the products layer, beside their outputs
    moments_dir = Path(spec.product_dir) / "moments" / "CB68"
    plots_dir = Path(spec.product_dir) / "plots"
    moments_dir.mkdir(parents=True)
    plots_dir.mkdir(parents=True)
    crashed_moment = moments_dir / f".tmp-7-ab12-{stem}_clean.mom0.pbcor.fits"
    crashed_plot = plots_dir / f".tmp-7-ab12-{stem}_clean_qa_plot_image.png"
    crashed_moment.write_text("")
    crashed_plot.write_text("")
    moments_unit = Unit(id=key.unit_id("moments"), kind="moments", key=key)
    qa_unit = Unit(id=key.unit_id("qa"), kind="qa", key=key)
    assert partial_outputs(spec, moments_unit) == [str(crashed_moment)]
    assert partial_outputs(spec, qa_unit) == [str(crashed_plot)]
