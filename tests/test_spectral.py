"""The spectral axis has one owner: c, radio velocities and the chunk split agree everywhere."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from faust_hpc import catalog, costmodel, spectral
from faust_hpc.imaging.chunking import split_channels as imaging_split


def test_speed_of_light_is_astropys():
    from astropy import constants, units as u

    assert spectral.C_M_S == constants.c.to_value(u.m / u.s)
    assert spectral.C_KMS == constants.c.to_value(u.km / u.s) == 299_792.458
    assert catalog.C_KMS is spectral.C_KMS and catalog.C_M_S is spectral.C_M_S


def test_radio_velocities_are_astropys_and_bit_identical_to_the_formula():
    """astropy's doppler_radio, and bit for bit the formula the products were made with."""
    from astropy import units as u

    rng = np.random.default_rng(3)
    for spw in list(catalog.load_catalog().spws.values())[::5]:
        rest = spw.restfreq_hz
        v = rng.uniform(-200.0, 200.0, 500)
        f = spectral.velocity_to_freq_hz(v, rest)
        assert np.array_equal(f, rest * (1.0 - v / 299_792.458))
        assert np.array_equal(f, (v * u.km / u.s).to_value(u.Hz, equivalencies=u.doppler_radio(rest * u.Hz)))
        back = spectral.freq_to_velocity_kms(f, rest)
        assert np.array_equal(back, 299_792.458 * (1.0 - f / rest))
        assert np.allclose(back, v, rtol=0, atol=1e-9)
        scalar = spectral.velocity_to_freq_hz(float(v[0]), rest)
        assert type(scalar) is float and scalar == f[0]
        assert type(spectral.freq_to_velocity_kms(scalar, rest)) is float
        assert spectral.chan_width_kms(spw.chan_width_hz, rest) == spw.chan_width_kms
        assert spectral.velocity_width_hz(spw.chan_width_kms, rest) == pytest.approx(spw.chan_width_hz, rel=1e-12)


@pytest.mark.parametrize("nchan", [1, 7, 10, 20, 62, 1920, 3840])
def test_the_cost_model_predicts_the_imagings_chunks(nchan):
    for nchunks in sorted({1, 2, 3, 4, 7, 40, nchan}):
        if nchunks > nchan:
            continue
        split = imaging_split(nchan, nchunks)
        assert costmodel.chunk_sizes(nchan, nchunks) == [n for _, n in split]
        assert [s for s, _ in split] == list(np.cumsum([0] + [n for _, n in split])[:-1])
        sizes = [n for _, n in split]
        assert sizes == sorted(sizes) and max(sizes) - min(sizes) <= 1   # remainder on the last chunks


def test_catalog_and_validator_start_without_astropy():
    """Every process (CLI, MPI rank, unit child) imports these; astropy waits for a conversion."""
    code = ("import sys, faust_hpc.runfile, faust_hpc.plan, faust_hpc.spectral as s; "
            "assert 'astropy' not in sys.modules, 'astropy at import'; "
            "s.velocity_to_freq_hz(5.0, 245e9); assert 'astropy' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
