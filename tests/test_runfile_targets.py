"""A run file's own targets and windows ([target."NAME"], [window."LABEL"]):
parsing, the run-scoped catalog, names, geometry and plan without CASA, and
bad input refused on the command line (exit 2, one line, nothing written)."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from faust_hpc import catalog, geometry, layout
from faust_hpc.runfile import load_runfile, target_ms_paths
from test_runfile import error_of   # one line naming the key, starting with the file's name

RUN = """
[run]
data_dir = "data"
product_dir = "products"

[target."N5921_2"]
data = "N5921_2_hi_contsub.ms"
vsys_kms = 1480.0

[window."HI"]
restfreq = "1420.405752MHz"
spw = 0
kind = "line"
line_vwin = "200km/s"

[imaging]
fields = ["N5921_2"]
spws = ["HI"]
arrays = ["all"]
"""


@pytest.fixture(autouse=True)
def _fresh_catalog():
    """Each test starts and ends with no run-file names in this process."""
    catalog.clear_run_entries()
    yield
    catalog.clear_run_entries()


def _fake_ms(path: Path) -> Path:
    """A directory shaped like a measurement set (enough for the filesystem checks)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "table.dat").write_bytes(b"")
    return path


def write(tmp_path: Path, text: str = RUN, name: str = "run.toml", ms: bool = True) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    if ms:
        _fake_ms(tmp_path / "data" / "N5921_2_hi_contsub.ms")
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- valid files

def test_targets_and_windows_join_the_catalog(tmp_path):
    spec = load_runfile(write(tmp_path))
    assert spec.setup == catalog.WINDOW_SETUP
    assert spec.fields == ("N5921_2",) and spec.spw_labels == ("HI",) and spec.arrays == ("all",)
    target = catalog.get_target("N5921_2")
    assert (target.vsys, target.faust, target.res, target.ra) == (1480.0, False, 0.0, None)
    hi = catalog.get_spw("HI")
    assert hi.is_window and hi.label == "HI" and hi.select == 0 and not hi.is_continuum
    assert hi.restfreq_hz == pytest.approx(1420.405752e6)
    assert hi.line_vwin == "200km/s"
    assert catalog.default_nchunks(hi) == 4
    # FAUST names keep their catalog values
    assert catalog.get_target("CB68").vsys == 5.0 and catalog.get_target("CB68").faust
    assert [k.path for k in spec.image_keys()] == ["N5921_2/HI/all/0.5"]


def test_an_unpickled_spec_brings_its_names(tmp_path):
    """A unit's child gets the spec pickled by its worker: the names come along."""
    spec = load_runfile(write(tmp_path))
    blob = pickle.dumps(spec)
    catalog.clear_run_entries()
    with pytest.raises(catalog.CatalogError):
        catalog.get_spw("HI")
    again = pickle.loads(blob)
    assert again == spec
    assert catalog.get_spw("HI").label == "HI" and catalog.get_target("N5921_2").vsys == 1480.0


def test_a_refused_file_leaves_the_catalog_as_it_was(tmp_path):
    bad = write(tmp_path, RUN.replace('spws = ["HI"]', 'spws = ["HJ"]'), name="bad.toml")
    assert 'unknown SPW label "HJ"; this run file\'s windows: HI' in error_of(bad)
    with pytest.raises(catalog.CatalogError):
        catalog.get_target("N5921_2")


def test_fields_must_be_defined_by_this_run_file(tmp_path):
    load_runfile(write(tmp_path))       # N5921_2 is known to this process now ...
    other = tmp_path / "other"
    other.mkdir()
    text = RUN.replace('[target."N5921_2"]', '[target."NGC0001"]')
    message = error_of(write(other, text))   # ... but not a target of this file
    assert '[imaging] fields: unknown field "N5921_2"' in message


def test_data_as_directory_glob_or_list(tmp_path):
    data = tmp_path / "data"
    a = _fake_ms(data / "obs" / "a.ms")
    b = _fake_ms(data / "obs" / "b.ms")
    c = _fake_ms(tmp_path / "elsewhere" / "c.ms")
    for value, expected in [('"obs"', [a, b]), ('"obs/*.ms"', [a, b]), (f'["obs/b.ms", "{c}"]', [b, c]),
                            ('"obs/a.ms"', [a])]:
        spec = load_runfile(write(tmp_path, RUN.replace('data = "N5921_2_hi_contsub.ms"', f"data = {value}")))
        assert target_ms_paths(spec.targets[0], spec.data_dir) == [str(p) for p in expected], value


def test_setup_optional_only_without_faust_names(tmp_path):
    mixed = RUN.replace('fields = ["N5921_2"]', 'fields = ["N5921_2", "CB68"]')
    assert "[imaging] setup: missing (FAUST field CB68 needs the integer 1, 2 or 3)" in \
        error_of(write(tmp_path, mixed), check_paths=False)
    faust_label = RUN.replace('spws = ["HI"]', 'spws = ["HI", "244.936GHz_CS"]')
    assert '[imaging] setup: missing (the FAUST SPW "244.936GHz_CS" needs' in \
        error_of(write(tmp_path, faust_label), check_paths=False)
    both = mixed.replace('spws = ["HI"]', 'spws = ["HI", "244.936GHz_CS"]\nsetup = 2').replace(
        'arrays = ["all"]', 'arrays = ["joint"]')
    spec = load_runfile(write(tmp_path, both), check_paths=False)
    assert spec.setup == 2 and spec.fields == ("N5921_2", "CB68")
    assert {k.path for k in spec.image_keys()} >= {"N5921_2/HI/joint/0.5", "CB68/244.936GHz_CS/joint/0.5"}


def test_spws_all_and_lines_include_the_windows(tmp_path):
    text = RUN.replace('spws = ["HI"]', 'spws = "lines"') + '\n[window."cont"]\nrestfreq = "1.4GHz"\nkind = "continuum"\n'
    assert load_runfile(write(tmp_path, text)).spw_labels == ("HI",)
    assert load_runfile(write(tmp_path, text.replace('spws = "lines"', 'spws = "all"'))).spw_labels == ("HI", "cont")


# --------------------------------------------------------------------------- names, geometry, plan

def test_parse_knows_run_file_names(tmp_path):
    load_runfile(write(tmp_path, RUN.replace('"N5921_2"', '"NGC.5921_x"')))
    name = layout.parse("/p/images/NGC.5921_x/NGC.5921_x_HI_chunk3_all_0.5_clean.image.pbcor.common.fits")
    assert (name.field, name.label, name.array, name.weighting, name.chunk, name.ext) == \
        ("NGC.5921_x", "HI", "all", "0.5", 3, "clean")
    stem = layout.image_stem_name("NGC.5921_x", "HI", "all", "0.5", ext="clean")
    assert layout.parse(stem + ".image").label == "HI"


def test_label_of_an_unknown_window_is_read_up_to_the_array_kind():
    # a FAUST field imaged in a window this process never heard of
    name = layout.parse("/p/CB68_H_I.x_12m_natural_clean.image")
    assert (name.field, name.label, name.array, name.weighting, name.ext) == ("CB68", "H_I.x", "12m", "natural",
                                                                               "clean")


def test_geometry_from_the_data_follows_the_original_rule():
    # VLA D configuration at 21 cm: 1.03 km baselines, 25 m dishes
    freq = 1413.4e6
    g = geometry.data_geometry(freq, 1030.0, (25.0,))
    res = geometry.C_M_S / freq / 1030.0 * geometry.RAD_TO_ARCSEC
    assert g.cell_arcsec == pytest.approx(res / 10)
    pb = 1.13 * geometry.C_M_S / freq / 25.0 * geometry.RAD_TO_ARCSEC
    assert g.imsize == geometry.optimum_size(int(2 * pb / g.cell_arcsec))
    assert (g.gridder, g.pblimit) == ("standard", geometry.pblimit_for("12m"))
    mixed = geometry.data_geometry(freq, 1030.0, (12.0, 7.0), imsize=128, cell_arcsec=3.0)
    assert (mixed.imsize, mixed.cell_arcsec, mixed.gridder, mixed.pblimit) == \
        (128, 3.0, "mosaic", geometry.pblimit_for("joint"))


def test_faust_geometry_unchanged_and_all_is_joint():
    for setup in (1, 2):
        assert geometry.geometry_for("CB68", setup, "all") == geometry.geometry_for("CB68", setup, "joint")


def test_plan_sizes_run_file_units_without_casa(tmp_path):
    path = write(tmp_path, RUN.replace('arrays = ["all"]', 'arrays = ["all"]\nimsize = 128\nnchunks = 2'))
    proc = subprocess.run([*_cli(), "plan", str(path), "--json"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json

    summary = json.loads(proc.stdout)
    from faust_hpc.plan import build_plan
    from faust_hpc.runfile import load_runfile

    assert summary["units"] == len(build_plan(load_runfile(path, check_paths=False)).units)
    assert summary["units_by_kind"]["chunk"] == 2
    assert "casatools" not in proc.stderr


# --------------------------------------------------------------------------- bad input on the command line

def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("faust-hpc")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "faust_hpc"]


BAD = [
    (RUN.replace('data = "N5921_2_hi_contsub.ms"\n', ""), '[target."N5921_2"] data: missing'),
    (RUN.replace('data = "N5921_2_hi_contsub.ms"', 'data = "nothing/*.ms"'),
     '[target."N5921_2"] data: nothing/*.ms (relative to'),
    (RUN.replace('data = "N5921_2_hi_contsub.ms"', "data = []"), '[target."N5921_2"] data: must not be empty'),
    (RUN.replace("vsys_kms = 1480.0\n", ""), '[target."N5921_2"] vsys_kms: missing'),
    (RUN.replace("vsys_kms = 1480.0", 'vsys_kms = "fast"'), '[target."N5921_2"] vsys_kms: expected a number'),
    (RUN.replace("vsys_kms = 1480.0", "vsys_kms = 4e5"), '[target."N5921_2"] vsys_kms: must be <='),
    (RUN.replace("vsys_kms = 1480.0", 'vsys_kms = 1480.0\nra = "15h22m"'), '[target."N5921_2"] dec: missing'),
    (RUN.replace("vsys_kms = 1480.0", 'vsys_kms = 1480.0\nra = "north"\ndec = "+5d"'),
     '[target."N5921_2"] ra: "north" is not an angle'),
    (RUN.replace("vsys_kms = 1480.0", "vsys_kms = 1480.0\nvelocity = 3"), '[target."N5921_2"] unknown key "velocity"'),
    (RUN.replace('[target."N5921_2"]', '[target."CB68"]').replace('"N5921_2"', '"CB68"'),
     '[target."CB68"] is a FAUST target'),
    (RUN.replace('"N5921_2"', '"N5921/2"'), 'target name "N5921/2": use letters'),
    (RUN.replace('"HI"', '"HI_12m"'), 'window name "HI_12m": use letters'),
    (RUN.replace('[window."HI"]', '[window."244.936GHz_CS"]').replace('spws = ["HI"]', 'spws = ["244.936GHz_CS"]'),
     '[window."244.936GHz_CS"] is a FAUST SPW label'),
    (RUN.replace('restfreq = "1420.405752MHz"\n', ""), '[window."HI"] restfreq: missing'),
    (RUN.replace('restfreq = "1420.405752MHz"', 'restfreq = "1420.4km/s"'),
     '[window."HI"] restfreq: unknown frequency unit'),
    (RUN.replace('restfreq = "1420.405752MHz"', 'restfreq = "-1GHz"'), '[window."HI"] restfreq: must be a positive'),
    (RUN.replace('restfreq = "1420.405752MHz"', "restfreq = true"), '[window."HI"] restfreq: expected a frequency'),
    (RUN.replace("spw = 0", "spw = -1"), '[window."HI"] spw: must be >= 0'),
    (RUN.replace("spw = 0", "spw = 1.5"), '[window."HI"] spw: expected an integer'),
    (RUN.replace('kind = "line"', 'kind = "lines"'), '[window."HI"] kind: unknown value "lines"'),
    (RUN.replace('line_vwin = "200km/s"', 'line_vwin = "0km/s"'), '[window."HI"] line_vwin: must be above 0'),
    (RUN.replace('arrays = ["all"]', 'arrays = ["vla"]'), '[imaging] arrays: unknown array kind "vla"'),
]


@pytest.mark.parametrize("text, needle", BAD, ids=[needle.split(" ", 1)[-1][:40] for _, needle in BAD])
def test_bad_new_keys_refused_on_the_command_line(tmp_path, text, needle):
    path = write(tmp_path, text)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    proc = subprocess.run([*_cli(), "plan", str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    if proc.returncode == 0:   # plan skips the filesystem checks: run makes them (before any CASA)
        proc = subprocess.run([*_cli(), "run", str(path)], capture_output=True, text=True, cwd=tmp_path,
                              timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("faust-hpc: error: run.toml: ") and needle in lines[0], lines[0]
    assert proc.stdout == ""
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_stage_items_of_run_file_targets(tmp_path):
    from faust_hpc.batch import stage_items

    _fake_ms(tmp_path / "data" / "obs" / "a.ms")
    outside = _fake_ms(tmp_path / "elsewhere" / "c.ms")
    text = RUN.replace('data = "N5921_2_hi_contsub.ms"', f'data = ["N5921_2_hi_contsub.ms", "obs/a.ms", "{outside}"]')
    spec = load_runfile(write(tmp_path, text))
    assert stage_items(spec) == ["N5921_2_hi_contsub.ms", "obs"]


def test_qa_ticks_and_mask_scales_of_run_file_targets(tmp_path):
    from faust_hpc.imaging import ImageConfig
    from faust_hpc.products.qa import nice_spacing

    assert [nice_spacing(x) for x in (0.3, 1.0, 1.5, 4.0, 60.0, 68.0, 101.0)] == [0.5, 1.0, 2.0, 5.0, 100.0, 100.0,
                                                                                 200.0]
    spec = load_runfile(write(tmp_path))
    # no CASA, no data read: a configuration of a run-file target is names until a stage runs
    hi = ImageConfig.from_name("N5921_2", "HI", data_dir=spec.data_dir, prod_dir=tmp_path / "p", setup=spec.setup)
    assert hi.dset.kind == "all" and hi.line_vwin == "200km/s"
    assert hi.dset.sky_freq_hz == pytest.approx(1420.405752e6 * (1 - 1480.0 / 299792.458))
    assert hi.mask_scales_arcsec(53.0) == [0.0, 159.0, 424.0]        # in beams of the masked image
    cb68 = ImageConfig.from_name("CB68", "244.936GHz_CS", prod_dir=tmp_path / "p")
    assert cb68.mask_scales_arcsec(53.0) == [0.0, 1.0, 3.0]           # FAUST: the documented arcsec


def test_a_position_becomes_the_phase_centre(tmp_path):
    from faust_hpc.imaging.dataset import DataSet

    text = RUN.replace("vsys_kms = 1480.0", 'vsys_kms = 1480.0\nra = "15h22m00.0s"\ndec = "+05d04m00s"')
    spec = load_runfile(write(tmp_path, text))
    assert DataSet("N5921_2", spec.setup, "all", data_dir=spec.data_dir).phasecenter == "J2000 15h22m00.0s +05d04m00s"
    assert DataSet("CB68", 2, "joint", data_dir=spec.data_dir).phasecenter == ""
