"""faust-hpc: the FAUST archival line-imaging pipeline at cluster scale.

The imaging API of the original pipeline (``ImageConfig``, ``DataSet``,
``ChunkedConfigSet``, ``make_all_moment_maps`` ...) lives in
:mod:`faust_hpc.imaging`; it imports CASA lazily, so importing this package
(or the catalog, run-file, plan and scheduler layers) never needs CASA.
"""
from __future__ import annotations

__version__ = "0.1.0"
