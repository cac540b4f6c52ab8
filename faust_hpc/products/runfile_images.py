"""The images a run file produces, for the products commands.

``faust-hpc moments`` / ``faust-hpc qa`` act on the final cubes of every
image key of a run file: ``<product_dir>/images/<FIELD>/<FIELD>_<LABEL>_<ARRAY>_<WEIGHTING>_<EXT>``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from faust_hpc.units import ImageKey


@dataclass(frozen=True)
class RunImage:
    key: ImageKey
    stem: Path            # .../images/<FIELD>/<base> without extension
    vwin: float | None    # per-SPW moments_vwin_kms override
    rms: float | None     # per-SPW rms override

    @property
    def image(self) -> Path:
        return Path(f"{self.stem}.image")

    @property
    def common(self) -> Path:
        return Path(f"{self.stem}.image.common")


def image_stem(product_dir: str | os.PathLike, key: ImageKey, ext: str) -> Path:
    base = f"{key.field}_{key.label}_{key.array}_{key.weighting}_{ext}"
    return Path(product_dir) / "images" / key.field / base


def run_images(spec) -> list[RunImage]:  # spec: faust_hpc.runfile.RunSpec
    out = []
    for key in spec.image_keys():
        over = spec.spw_overrides(key.label)
        out.append(RunImage(key, image_stem(spec.product_dir, key, spec.ext),
                            getattr(over, "moments_vwin_kms", None), getattr(over, "rms", None)))
    return out
