"""Which units of a run's plan a serial command runs (``image``, ``moments``, ``qa``).

Why a restricted plan rather than a second driver: ``faust-hpc image``,
``moments`` and ``qa`` run their units through the same launcher, executor,
manifest, resume and leases as ``faust-hpc run``; they only run fewer of
them. A selected unit whose dependency is outside the selection runs only
when that dependency is done -- recorded done in the manifest, or, for the
products of a cube made outside a run (the original pipeline's API), when its
input cube is on disk.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable

from faust_hpc.plan import Plan
from faust_hpc.run.images import run_images
from faust_hpc.units import IMAGE_STEP_KINDS, Unit

PRODUCT_KINDS = frozenset({"moments", "qa"})
IMAGE_KINDS = frozenset(IMAGE_STEP_KINDS)     # what makes the final cube: `faust-hpc image` runs them
DATA_KINDS = frozenset({"prepare", "chunk"})   # the units that read the measurement sets


@dataclass(frozen=True)
class Selection:
    """``kinds``: unit kinds to run (None: all); ``only``: an image key path or
    unit id prefix; ``params``: extra parameters for the selected units (the
    moments / qa options of the CLI); ``redo``: run selected units even when
    the manifest records them done (overwrite their products)."""

    kinds: frozenset[str] | None = None
    only: str | None = None
    params: tuple[tuple[str, object], ...] = ()
    redo: bool = False

    @property
    def reads_data(self) -> bool:
        """Do the selected units read the measurement sets (so they must be checked first)?"""
        return self.kinds is None or bool(self.kinds & DATA_KINDS)

    def wants(self, unit: Unit) -> bool:
        if self.kinds is not None and unit.kind not in self.kinds:
            return False
        if self.only is None:
            return True
        return unit.id.startswith(self.only) or self.only.startswith(unit.key.path)


def input_cube_exists(spec: Any, unit: Unit) -> bool:
    """Is the final cube a moments / qa unit reads on disk?"""
    if unit.kind not in PRODUCT_KINDS:
        return False
    return any(im.key == unit.key and im.image.exists() for im in run_images(spec))


@dataclass
class Restricted:
    plan: Plan                 # the selected units that can run, deps outside the selection removed
    unready: list[Unit]        # selected units whose dependencies are not done


def restrict(plan: Plan, selection: Selection, done: Iterable[str], spec: Any) -> Restricted:
    """The part of ``plan`` a command runs, given the units already ``done``."""
    done = set(done)
    chosen = {uid: u for uid, u in plan.units.items() if selection.wants(u)}
    units: dict[str, Unit] = {}
    unready: list[Unit] = []
    for uid, unit in chosen.items():
        outside = [d for d in unit.deps if d not in chosen]
        if any(d not in done for d in outside) and not input_cube_exists(spec, unit):
            unready.append(unit)
            continue
        units[uid] = replace(unit, deps=tuple(d for d in unit.deps if d in chosen),
                             params=tuple(unit.params) + tuple(selection.params))
    # a unit whose dependency could not be kept cannot run either
    changed = True
    while changed:
        changed = False
        for uid, unit in list(units.items()):
            if any(d not in units for d in unit.deps):
                unready.append(plan.units[uid])
                del units[uid]
                changed = True
    sub = Plan(units, dict(plan.models), [k for k in plan.keys if any(u.key == k for u in units.values())],
               plan.data_available, plan.workers_hint, plan.node_memory_gb)
    return Restricted(sub, unready)


__all__ = ["Selection", "Restricted", "restrict", "input_cube_exists", "PRODUCT_KINDS", "IMAGE_KINDS"]
