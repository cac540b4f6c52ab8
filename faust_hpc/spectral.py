"""The spectral axis: the speed of light, radio-convention velocities, chunk splits.

One owner for the rules every layer (catalog, cost model, imaging, simulator,
products) needs about frequency channels, so that they cannot disagree:

* the speed of light comes from ``astropy.constants.c``;
* frequency <-> velocity uses astropy's radio convention
  (``astropy.units.doppler_radio``: ``v = c (1 - f / f0)``, ``f = f0 (1 - v / c)``),
  the convention of FAUST's LSRK cubes and of tclean's ``veltype="radio"``;
* widths (a channel, a line) scale linearly, ``dv = c df / f0``, the
  derivative of that convention;
* a channel range is split into contiguous chunks with the remainder of an
  uneven division on the *last* chunks, as the original pipeline did (this
  defines the archive's chunk boundaries; the cost model predicts the same).

Pure Python plus astropy/numpy: no CASA, importable by the plan layer.
"""
from __future__ import annotations

from typing import Union

import astropy.units as u
import numpy as np
from astropy.constants import c as _c

_KMS = u.km / u.s
ArrayOrFloat = Union[float, np.ndarray]
"""A float in, a float out; an array in, an array out."""

C_M_S: float = float(_c.to_value(u.m / u.s))
"""Speed of light in m/s (astropy)."""
C_KMS: float = float(_c.to_value(_KMS))
"""Speed of light in km/s (astropy)."""


def freq_to_velocity_kms(freq_hz: ArrayOrFloat, rest_hz: float) -> ArrayOrFloat:
    """Radio velocity (km/s) of sky frequency ``freq_hz`` for rest frequency ``rest_hz``."""
    value = (np.asarray(freq_hz, dtype=float) * u.Hz).to_value(
        _KMS, equivalencies=u.doppler_radio(float(rest_hz) * u.Hz))
    return _like_input(value)


def velocity_to_freq_hz(v_kms: ArrayOrFloat, rest_hz: float) -> ArrayOrFloat:
    """Sky frequency (Hz) of radio velocity ``v_kms`` for rest frequency ``rest_hz``."""
    value = (np.asarray(v_kms, dtype=float) * _KMS).to_value(
        u.Hz, equivalencies=u.doppler_radio(float(rest_hz) * u.Hz))
    return _like_input(value)


def _like_input(value: np.ndarray) -> ArrayOrFloat:
    return float(value) if np.ndim(value) == 0 else value


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
