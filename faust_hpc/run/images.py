"""The final images a run file produces, and the per-SPW settings of their products.

``faust-hpc moments`` / ``faust-hpc qa`` name the cubes they act on (and the
ones not imaged yet) through this list; the names are
:class:`faust_hpc.layout.RunLayout`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faust_hpc.layout import COMMON_EXT, IMAGE_EXT, RunLayout
from faust_hpc.units import ImageKey


@dataclass(frozen=True)
class RunImage:
    key: ImageKey
    stem: Path            # .../images/<FIELD>/<base> without extension
    vwin: float | None    # per-SPW moments_vwin_kms override
    rms: float | None     # per-SPW rms override

    @property
    def image(self) -> Path:
        return Path(f"{self.stem}.{IMAGE_EXT}")

    @property
    def common(self) -> Path:
        return Path(f"{self.stem}.{COMMON_EXT}")


def run_images(spec: Any) -> list[RunImage]:  # spec: faust_hpc.runfile.RunSpec
    layout = RunLayout(spec.product_dir)
    out = []
    for key in spec.image_keys():
        over = spec.spw_overrides(key.label)
        stem = layout.image_base(key.field, key.label, key.array, key.weighting, ext=spec.ext)
        out.append(RunImage(key, stem,
                            getattr(over, "moments_vwin_kms", None), getattr(over, "rms", None)))
    return out


__all__ = ["RunImage", "run_images"]
