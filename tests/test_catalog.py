"""The FAUST catalog against the facts file (parsed here independently),
did-you-mean lookups, and the documented geometry rules."""
from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from faust_hpc import catalog, geometry
from faust_hpc.errors import CatalogError, UserInputError

FACTS = Path(__file__).resolve().parents[1] / "faust_hpc" / "data" / "faust_facts.toml"
# The project's reference facts sit in shared/ beside the checkout (CI clones there too).
SHARED_FACTS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "faust_facts.toml"


@pytest.fixture(scope="module")
def facts() -> dict:
    return tomllib.loads(FACTS.read_text())


def _label(window: dict) -> str:
    ghz = float(window["restfreq"].removesuffix("GHz"))
    return f"{ghz:.3f}GHz_{window['mol']}"


def test_packaged_facts_are_the_reference_facts():
    if not SHARED_FACTS.exists():
        pytest.skip("reference facts not on this machine")
    assert tomllib.loads(SHARED_FACTS.read_text()) == tomllib.loads(FACTS.read_text())


def test_all_13_targets_with_exact_values(facts):
    targets = facts["targets"]
    assert len(targets) == 13
    assert set(catalog.ALL_FIELD_NAMES) == set(targets)
    for name, values in targets.items():
        t = catalog.get_target(name)
        assert (t.name, t.res, t.vsys) == (name, values["res"], values["vsys"])


def test_all_33_spws_with_exact_values(facts):
    windows = facts["spectral_windows"]["windows"]
    assert len(windows) == 33
    assert len(catalog.ALL_SPW_LABELS) == 33
    assert set(catalog.ALL_SPW_LABELS) == {_label(w) for w in windows}
    for w in windows:
        spw = catalog.get_spw(_label(w))
        assert spw.setup == w["setup"]
        assert spw.restfreq == w["restfreq"]
        assert spw.mol_name == w["mol"]
        assert spw.name == w["name"]
        assert spw.ms_restfreq == w["ms_restfreq"]
        assert spw.spw_id == w["spw_id_12m"]
        assert spw.ot_name == w["ot_name"]
        assert spw.nchan == w["nchan"]
        assert spw.chan_width_hz == pytest.approx(w["chan_width_hz"], rel=1e-12)
        assert spw.tot_bw_hz == pytest.approx(w["tot_bw_hz"], rel=1e-12)
        assert spw.is_continuum == (w["mol"] == "cont")


def test_documented_labels_and_setups():
    for label in ("244.936GHz_CS", "233.796GHz_cont", "93.176GHz_N2Hp"):
        assert catalog.get_spw(label).label == label
    assert [len(catalog.SPWS_BY_SETUP[k]) for k in (1, 2, 3)] == [13, 13, 7]
    assert [s.label for s in catalog.spws_for_setup(2)] == [s.label for s in catalog.SPWS_BY_SETUP[2]]
    assert catalog.get_setup(3).arrays == ("12m",)


def test_did_you_mean_for_typos():
    with pytest.raises(CatalogError) as err:
        catalog.get_spw("244.936GHz_CSS")
    assert 'did you mean "244.936GHz_CS"?' in str(err.value)
    with pytest.raises(CatalogError) as err:
        catalog.get_target("CB86")
    assert 'did you mean "CB68"?' in str(err.value)
    assert isinstance(err.value, UserInputError)
    with pytest.raises(CatalogError) as err:
        catalog.get_target("Nothing_like_it_at_all")
    assert "valid values:" in str(err.value)


def test_default_chunk_counts():
    assert catalog.default_nchunks(catalog.get_spw("244.936GHz_CS")) == 4
    assert catalog.default_nchunks(catalog.get_spw("233.796GHz_cont")) == 40
    assert catalog.default_nchunks(catalog.get_spw("93.176GHz_N2Hp")) == 20
    assert catalog.default_nchunks(catalog.get_spw("95.000GHz_cont")) == 80


def test_geometry_cb68_setup2_joint():
    g = geometry.geometry_for("CB68", 2, "joint")
    assert g.cell_arcsec == pytest.approx(0.036)
    assert g.imsize == 1344   # the original's getOptimumSize(int(w)) (was 1350: 2,3,5 only, ceil)
    assert g.gridder == "mosaic"
    assert g.pblimit == 0.2


def test_geometry_7m_cell_and_single_array():
    wavelength = 299_792_458.0 / 262e9
    expected = wavelength / 50.0 * 180 / math.pi * 3600 / 10
    g = geometry.geometry_for("CB68", 2, "7m")
    assert g.cell_arcsec == pytest.approx(expected, rel=1e-9)
    assert g.gridder == "standard" and g.pblimit == -0.01
    g3 = geometry.geometry_for("CB68", 3, "12m")
    assert g3.gridder == "standard" and g3.pblimit == -0.01
    assert g3.imsize % 2 == 0 and g3.imsize >= 2 * 1.13 * (299_792_458.0 / 93e9) / 12 * 206264.8 / 0.036


@pytest.mark.parametrize("kind", ["joint", "7m"])
def test_setup3_joint_and_7m_refused(kind):
    with pytest.raises(UserInputError, match="Setup 3"):
        geometry.geometry_for("CB68", 3, kind)
