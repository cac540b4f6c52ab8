"""What the first launcher of a run froze: the spec digest and the chunk counts.

Why frozen: chunk counts and boundaries decide the products bit for bit, so a
resumed run, or one on another number of ranks, must cut the same chunks;
and a run file whose imaging settings changed mid-run would mix two kinds of
product in one directory.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping

from faust_hpc.plan import build_plan
from faust_hpc.run.manifest import Manifest

# Settings that change what the products are; [scheduler] only changes how they are made.
# data_dir: where the MSs are read from, not what they hold -- a batch job may read a staged
# copy (FAUST_DATA_DIR=/dev/shm/..., see faust_hpc.batch) and must still resume the run.
_NOT_HASHED = ("path", "name", "scheduler", "product_dir", "casa_data_dir", "data_dir")


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def spec_hash(spec: Any) -> str:
    """A digest of everything in the run spec that shapes the products. A run of one
    Setup hashes it as ``setup`` (an integer, 0 for none), as before run files could
    name several: a run started before that resumes under the same digest."""
    plain = {k: v for k, v in _plain(spec).items() if k not in _NOT_HASHED}
    if "setups" in plain:
        setups = plain.pop("setups")
        plain["setup"] = setups if len(setups) > 1 else (setups[0] if setups else 0)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def planned_nchunks(plan: Any) -> dict[str, int]:
    """Chunk count per image key path as the plan has it now (one pass over the plan)."""
    return plan.chunk_counts()


def build_run_plan(spec: Any, manifest: Manifest, records: list[dict]) -> tuple[Any, dict[str, int]]:
    """The plan, with the chunk counts frozen by this run's first launcher."""
    frozen = manifest.frozen_nchunks(records)
    return build_plan(spec, frozen_nchunks=frozen), frozen


__all__ = ["spec_hash", "planned_nchunks", "build_run_plan"]
