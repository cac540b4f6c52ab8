"""Work units: the vocabulary shared by plan, scheduler, manifest and launcher.

A unit is one piece of work that a worker runs by itself in a child process.
Its id is stable across runs and rank counts, so the manifest of a first run
can be trusted by a resumed one:

    <FIELD>/<LABEL>/<ARRAY>/<WEIGHTING>/<PART>
    e.g. CB68/233.796GHz_cont/joint/0.5/chunk07

PART is ``prepare``, ``chunkNN`` (zero-padded to two digits, or more when
there are over 100 chunks), ``beam``, ``postNN`` (one per group of chunks,
numbered and padded as the chunks), ``concatNN`` (one per group of final
image extensions, numbered in :data:`faust_hpc.layout.FINAL_PRODUCT_EXTS`
order), ``finalize``, ``moments`` or ``qa``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

UNIT_KINDS = ("prepare", "chunk", "beam", "post", "concat", "finalize", "moments", "qa")
# `faust-hpc plan --json` groups moments and QA as "products"; the groups in this order.
KIND_GROUP = {"prepare": "prepare", "chunk": "chunk", "beam": "beam", "post": "post", "concat": "concat",
              "finalize": "finalize", "moments": "products", "qa": "products"}
GROUPS = tuple(dict.fromkeys(KIND_GROUP.values()))
IMAGE_STEP_KINDS = ("prepare", "chunk", "beam", "post", "concat", "finalize")
NUMBERED_KINDS = ("chunk", "post", "concat")   # kinds whose part carries a number
"""The kinds that make an image's final cube (what ``faust-hpc image --no-products`` runs)."""
REPORTING_KINDS = ("finalize",)
"""Kinds whose outputs other units made (finalize checks and reports the concat
units' products): cleaning one before it runs again must never delete them."""


def format_weighting(weighting: float | int | str) -> str:
    """The weighting as it appears in file names and unit ids: ``0.5``,
    ``-2.0``, ``natural``, ``uniform`` (the original pipeline's convention)."""
    if isinstance(weighting, str):
        return weighting
    return f"{float(weighting):.1f}" if float(weighting).is_integer() else f"{float(weighting)}"


def _numbered(stem: str, index: int, count: int) -> str:
    width = max(2, len(str(max(count - 1, 0))))
    return f"{stem}{index:0{width}d}"


def chunk_part(index: int, nchunks: int) -> str:
    return _numbered("chunk", index, nchunks)


def post_part(index: int, ngroups: int) -> str:
    """``postNN``: the postprocess unit of the ``index``-th group of chunks."""
    return _numbered("post", index, ngroups)


def concat_part(index: int, ngroups: int) -> str:
    """``concatNN``: the concatenation unit of the ``index``-th group of final image extensions."""
    return _numbered("concat", index, ngroups)


def kind_of_id(unit_id: str) -> str:
    """The kind a unit id names (``.../chunk07`` -> ``chunk``, ``.../post03`` -> ``post``,
    ``.../concat02`` -> ``concat``)."""
    part = unit_id.rsplit("/", 1)[-1]
    stem = part.rstrip("0123456789")
    return stem if stem in NUMBERED_KINDS and stem != part else part


@dataclass(frozen=True, order=True)
class ImageKey:
    """One imaging product line: field x SPW label x array kind x weighting."""

    field: str
    label: str
    array: str
    weighting: str  # formatted with format_weighting

    @property
    def path(self) -> str:
        return f"{self.field}/{self.label}/{self.array}/{self.weighting}"

    def unit_id(self, part: str) -> str:
        return f"{self.path}/{part}"

    @classmethod
    def from_unit_id(cls, unit_id: str) -> "ImageKey":
        field_, label, array, weighting, _part = unit_id.split("/")
        return cls(field_, label, array, weighting)


@dataclass(frozen=True)
class Unit:
    """A node of the work graph.

    ``cost`` is in estimated seconds of one worker on the reference machine
    (only ratios matter to the scheduler); ``mem_gb`` is the estimated peak
    resident memory of the unit's child process.
    """

    id: str
    kind: str
    key: ImageKey
    deps: tuple[str, ...] = ()
    cost: float = 1.0
    mem_gb: float = 0.5
    out_gb: float = 0.0           # disk its outputs take (the cost model's estimate)
    chunk_index: int | None = None
    nchunks: int | None = None
    params: tuple[tuple[str, object], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.kind not in UNIT_KINDS:
            raise ValueError(f"unknown unit kind {self.kind!r}")

    @property
    def group(self) -> str:
        return KIND_GROUP[self.kind]


def ids(units: Iterable[Unit]) -> list[str]:
    return [u.id for u in units]
