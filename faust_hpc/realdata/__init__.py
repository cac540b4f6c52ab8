"""Real observations prepared for imaging (today: the VLA NGC 5921 HI data
shipped in the ``casadata`` package).

``prepare_ngc5921(outdir) -> Path`` calibrates the raw UVFITS with the
standard CASA steps and returns the continuum-subtracted target MS; see
:mod:`faust_hpc.realdata.ngc5921`. CASA loads only when it is called.
"""
from __future__ import annotations

from typing import Any

__all__ = ["prepare_ngc5921", "load_ngc5921_record"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from faust_hpc.realdata import ngc5921

        return getattr(ngc5921, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
