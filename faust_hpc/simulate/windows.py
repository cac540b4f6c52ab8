"""The simulated spectral windows: names, basebands and LSRK channel grids.

Each simulated window keeps the real channel width of its FAUST window but
has fewer channels (see :mod:`.sizes`), centred in LSRK on the line's sky
frequency at the target's vsys (radio convention). ALMA Doppler-tunes each
execution block, so both EBs share this LSRK grid at their mid-times while
their TOPO grids (what the MS stores) differ; :mod:`.msfix` writes the TOPO
grid. No CASA here: pure arithmetic on the catalog.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from faust_hpc import spectral
from faust_hpc.catalog import Spw, get_setup

_BBC_RE = re.compile(r"BB_(\d+)")


@dataclass(frozen=True)
class SimWindow:
    """One simulated SPW (same LSRK grid in every execution block)."""

    spw: Spw
    nchan: int
    vsys_kms: float

    @property
    def label(self) -> str:
        return self.spw.label

    @property
    def is_continuum(self) -> bool:
        return self.spw.is_continuum

    @property
    def name(self) -> str:
        """SPECTRAL_WINDOW.NAME as ALMA writes it; ends in the catalog's ot_name."""
        band = get_setup(self.spw.setup).band
        return f"X0000000000#ALMA_RB_{band:02d}#{self.spw.ot_name}"

    @property
    def ch_avg_name(self) -> str:
        """The channel-averaged twin ALMA writes next to each FULL_RES window."""
        return self.name.replace("#FULL_RES", "#CH_AVG")

    @property
    def baseband(self) -> int:
        match = _BBC_RE.search(self.spw.ot_name)
        return int(match.group(1)) if match else 1

    @property
    def rest_hz(self) -> float:
        return self.spw.restfreq_hz

    @property
    def chan_width_hz(self) -> float:
        return self.spw.chan_width_hz

    @property
    def centre_lsrk_hz(self) -> float:
        """Sky frequency of the rest frequency at vsys (radio convention)."""
        return spectral.velocity_to_freq_hz(self.vsys_kms, self.rest_hz)

    @property
    def freqs_lsrk_hz(self) -> np.ndarray:
        k = np.arange(self.nchan) - (self.nchan - 1) / 2.0
        return self.centre_lsrk_hz + k * self.chan_width_hz

    @property
    def velocities_kms(self) -> np.ndarray:
        """Radio velocity of each LSRK channel with respect to the rest frequency."""
        return spectral.freq_to_velocity_kms(self.freqs_lsrk_hz, self.rest_hz)

    @property
    def chan_width_kms(self) -> float:
        return spectral.chan_width_kms(self.chan_width_hz, self.rest_hz)


def plan_windows(spws: list[Spw], vsys_kms: float, nchan_line: int, nchan_cont: int) -> list[SimWindow]:
    return [SimWindow(spw=s, nchan=nchan_cont if s.is_continuum else nchan_line, vsys_kms=vsys_kms)
            for s in spws]
