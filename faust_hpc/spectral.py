"""The spectral axis: the speed of light, radio-convention velocities, chunk splits.

One owner for the rules every layer (catalog, cost model, imaging, simulator,
products) needs about frequency channels, so that they cannot disagree:

* the speed of light is the SI's exact value, the one ``astropy.constants.c``
  holds (``tests/test_spectral.py`` pins the two together);
* frequency <-> velocity uses astropy's radio convention
  (``astropy.units.doppler_radio``: ``v = c (1 - f / f0)``, ``f = f0 (1 - v / c)``),
  the convention of FAUST's LSRK cubes and of tclean's ``veltype="radio"``;
* widths (a channel, a line) scale linearly, ``dv = c df / f0``, the
  derivative of that convention;
* a channel range is split into contiguous chunks with the remainder of an
  uneven division on the *last* chunks, as the original pipeline did (this
  defines the archive's chunk boundaries; the cost model predicts the same).

astropy is imported on the first velocity conversion, not with this module:
the catalog and the run-file validator import this module in every process
(the CLI, each MPI rank, each unit child), and astropy.units costs them
0.5-1 s of start-up, while only the simulator, the imaging and the products
convert velocities. No CASA here.
"""
from __future__ import annotations

from functools import cache
from types import ModuleType
from typing import Any

C_M_S: float = 299_792_458.0
"""Speed of light in m/s: exact by the SI definition of the metre (= astropy.constants.c)."""
C_KMS: float = C_M_S / 1e3
"""Speed of light in km/s."""

ArrayOrFloat = Any
"""A float in, a float out; a numpy array in, a numpy array out."""


@cache
def _units() -> ModuleType:
    """astropy.units, imported once, on first use (see the module doc)."""
    import astropy.units as u

    return u


def freq_to_velocity_kms(freq_hz: ArrayOrFloat, rest_hz: float) -> ArrayOrFloat:
    """Radio velocity (km/s) of sky frequency ``freq_hz`` for rest frequency ``rest_hz``."""
    u = _units()
    value = u.Quantity(freq_hz, u.Hz, dtype=float).to_value(
        u.km / u.s, equivalencies=u.doppler_radio(float(rest_hz) * u.Hz))
    return _like_input(value)


def velocity_to_freq_hz(v_kms: ArrayOrFloat, rest_hz: float) -> ArrayOrFloat:
    """Sky frequency (Hz) of radio velocity ``v_kms`` for rest frequency ``rest_hz``."""
    u = _units()
    value = u.Quantity(v_kms, u.km / u.s, dtype=float).to_value(
        u.Hz, equivalencies=u.doppler_radio(float(rest_hz) * u.Hz))
    return _like_input(value)


def _like_input(value: Any) -> ArrayOrFloat:
    return float(value) if getattr(value, "ndim", 0) == 0 else value


def chan_width_kms(width_hz: float, rest_hz: float) -> float:
    """Velocity width (km/s) of a frequency width (a channel) at ``rest_hz``."""
    return C_KMS * width_hz / rest_hz


def velocity_width_hz(width_kms: float, rest_hz: float) -> float:
    """Frequency width (Hz) of a velocity width (a line) at ``rest_hz``."""
    return width_kms / C_KMS * rest_hz


def split_channels(nchan_total: int, nchunks: int) -> list[tuple[int, int]]:
    """(start_chan_ix, nchan) of contiguous chunks; the remainder of an uneven
    division goes one channel each to the last chunks (as the original)."""
    nchunks, nchan_total = int(nchunks), int(nchan_total)
    if nchunks < 1:
        raise ValueError(f"nchunks must be >= 1, got {nchunks}")
    if nchunks > nchan_total:
        raise ValueError(f"cannot split {nchan_total} channels into {nchunks} chunks")
    base, remainder = divmod(nchan_total, nchunks)
    first_bigger = nchunks - remainder
    chunks, start = [], 0
    for index in range(nchunks):
        size = base + (1 if index >= first_bigger else 0)
        chunks.append((start, size))
        start += size
    return chunks


__all__ = ["C_KMS", "C_M_S", "freq_to_velocity_kms", "velocity_to_freq_hz", "chan_width_kms",
           "velocity_width_hz", "split_channels"]
