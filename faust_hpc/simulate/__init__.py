"""Simulated FAUST data: 12m + 7m measurement sets with a known sky.

``simulate(outdir, field="CB68", setup=2, spws=None, size="small")`` writes
``outdir/data/<FIELD>-Setup<N>/uid___*_target_lines_..._aligned.ms`` (one
12m and one 7m execution block), ``outdir/truth/`` (true model cubes as FITS
and ``truth.json``) and ``outdir/demo.toml`` (a run file whose products go
to ``outdir/products``), and returns a :class:`SimResult`.
"""
from faust_hpc.simulate.core import DEFAULT_SEED, SimResult, is_complete, resolve_spws, simulate
from faust_hpc.simulate.sizes import SIZES, SimSize

__all__ = ["simulate", "SimResult", "is_complete", "resolve_spws", "SIZES", "SimSize", "DEFAULT_SEED"]
