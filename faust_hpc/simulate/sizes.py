"""Size presets of the simulated data sets.

The real FAUST windows have 480 (narrow) or 1920-3840 (continuum) channels
and the default images are ~1500 x 1500 pixels; imaging that on a laptop
takes hours. The presets keep the *real channel widths* of each window but
fewer channels (the window stays centred on the target's vsys, so the line
is inside), fewer antennas/integrations for the smallest sizes, and suggest
an image geometry (cell, imsize) for the run file that keeps tclean cheap.

- ``tiny``: unit tests; seconds per tclean (imsize <= 128, 20 channels).
- ``small``: the demo; a full default pipeline run of one narrow SPW
  (joint, chunked) takes a few minutes on a 2-core machine.
- ``medium``: closer to real data volumes, for benchmarks.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from faust_hpc.errors import UserInputError


@dataclass(frozen=True)
class SimSize:
    """Everything that changes between size presets."""

    name: str
    nchan_line: int          # channels of a narrow (FDM) window
    nchan_cont: int          # channels of the wide continuum window
    nant_12m: int            # 0 = every antenna of the configuration
    nant_7m: int
    time_12m_s: float        # on-source time per execution block
    time_7m_s: float
    integration_s: float
    nscans: int
    model_cell_arcsec: float  # pixel of the true model cube
    model_npix: int
    image_cell_arcsec: float  # geometry written into demo.toml
    image_size: int
    peak_snr: float          # disk peak / expected joint natural rms, per channel, at the nominal beam

    def as_dict(self) -> dict:
        return asdict(self)


# The seed of every simulated data set unless the user asks for another.
DEFAULT_SEED = 20231

SIZES: dict[str, SimSize] = {
    "tiny": SimSize("tiny", nchan_line=20, nchan_cont=20, nant_12m=16, nant_7m=0,
                    time_12m_s=360.0, time_7m_s=720.0, integration_s=30.0, nscans=2,
                    model_cell_arcsec=0.05, model_npix=256,
                    image_cell_arcsec=0.1, image_size=128, peak_snr=25.0),
    "small": SimSize("small", nchan_line=64, nchan_cont=64, nant_12m=0, nant_7m=0,
                     time_12m_s=900.0, time_7m_s=1800.0, integration_s=60.0, nscans=3,
                     model_cell_arcsec=0.04, model_npix=384,
                     image_cell_arcsec=0.08, image_size=256, peak_snr=25.0),
    "medium": SimSize("medium", nchan_line=128, nchan_cont=128, nant_12m=0, nant_7m=0,
                      time_12m_s=1800.0, time_7m_s=3600.0, integration_s=60.0, nscans=4,
                      model_cell_arcsec=0.04, model_npix=480,
                      image_cell_arcsec=0.06, image_size=384, peak_snr=25.0),
}


def get_size(name: str) -> SimSize:
    if name not in SIZES:
        raise UserInputError(f'unknown simulation size "{name}"; valid values: {", ".join(SIZES)}')
    return SIZES[name]
