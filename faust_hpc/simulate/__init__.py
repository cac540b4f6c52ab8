"""Simulated FAUST data: 12m + 7m measurement sets with a known sky.

``simulate(outdir, field="CB68", setup=2, spws=None, size="small")`` writes
``outdir/data/<FIELD>-Setup<N>/uid___*_target_lines_..._aligned.ms`` (one
12m and one 7m execution block), ``outdir/truth/`` (true model cubes as FITS
and ``truth.json``) and ``outdir/demo.toml`` (a run file whose products go
to ``outdir/products``), and returns a :class:`SimResult`.
"""
from __future__ import annotations

from typing import Any

from faust_hpc.simulate.sizes import DEFAULT_SEED, SIZES, SimSize

__all__ = ["simulate", "SimResult", "is_complete", "resolve_spws", "SIZES", "SimSize", "DEFAULT_SEED"]

_CORE_NAMES = ("simulate", "SimResult", "is_complete", "resolve_spws")


def __getattr__(name: str) -> Any:
    # The simulator (numpy, scipy.signal, CASA) loads only when used: every
    # `faust-hpc` process, every MPI rank among them, imports the CLI, which
    # names this package.
    if name in _CORE_NAMES:
        from faust_hpc.simulate import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
