"""Invalidation: mark units (and everything downstream) to be redone by the next run.

The documented restart-one-chunk workflow in batch form (``faust-hpc
rerun``): an ``invalidated`` record resets a unit to pending, so the next
``faust-hpc run`` redoes exactly the chosen units and what is made from them
(the image's beam, post units, concat units, finalize, moments and QA; the
other chunks' images are reused). A channel is mapped to its chunk through the chunk list the run froze
(the prepare unit's done record), so the chunk is the one that holds that
channel in *this* run.
"""
from __future__ import annotations

import os

from faust_hpc.errors import UserInputError
from faust_hpc.run.claim import RunBusyError
from faust_hpc.run.records import UnitEvent, UnitStatus, hostname, unit_record
from faust_hpc.run.view import RunView
from faust_hpc.units import ImageKey


def chunk_bounds(entry: object) -> tuple[int, int]:
    """(first channel, channel count) of one entry of a frozen chunk list:
    ``[start, nchan]``, the imaging engine's ``{"start_chan_ix": .., "nchan": ..}``
    or ``{"channels": [..]}``."""
    if isinstance(entry, dict):
        if "channels" in entry:
            chans = list(entry["channels"])
            return int(chans[0]), len(chans)
        start = next((entry[k] for k in ("start_chan_ix", "chan_start", "first") if k in entry), None)
        if start is None and isinstance(entry.get("start"), int):
            start = entry["start"]
        n = entry.get("nchan", entry.get("n"))
        if n is None and "stop" in entry:
            n = int(entry["stop"]) - int(start)
        return int(start), int(n)
    start, n = entry  # type: ignore[misc]
    return int(start), int(n)


def _chunk_of_channel(view: RunView, key: ImageKey, channel: int) -> int:
    prep = view.states.get(key.unit_id("prepare"))
    frozen = prep.info.get("chunks") if prep is not None and prep.status == UnitStatus.DONE else None
    if not frozen:
        raise UserInputError(f"{key.path}: the chunk list is not known until its prepare unit has run; "
                             f"run first, or name the chunk with --chunk K")
    for k, entry in enumerate(frozen):
        start, n = chunk_bounds(entry)
        if start <= channel < start + n:
            return k
    last = sum(chunk_bounds(e)[1] for e in frozen) - 1
    raise UserInputError(f"--channel {channel}: {key.path} has channels 0..{last}")


def select_units(view: RunView, spw: str, *, field: str | None = None, array: str | None = None,
                 weighting: str | None = None, chunk: int | None = None, channel: int | None = None) -> list[str]:
    """The units of one SPW to redo (all, one chunk, or the chunk of one
    channel) and everything downstream of them, sorted."""
    spec = view.spec
    if spw not in spec.spw_labels:
        raise UserInputError(f"--spw {spw!r} is not imaged by {spec.path.name}; "
                             f"choose one of: {', '.join(spec.spw_labels)}")
    keys = {u.key for u in view.plan.units.values()
            if u.key.label == spw and (field is None or u.key.field == field)
            and (array is None or u.key.array == array) and (weighting is None or u.key.weighting == weighting)}
    if not keys:
        raise UserInputError(f"no image of SPW {spw} matches --field/--array/--weighting in {spec.path.name}")
    targets: set[str] = set()
    for key in sorted(keys):
        units = [u for u in view.plan.units.values() if u.key == key]
        if chunk is None and channel is None:
            targets |= {u.id for u in units}
            continue
        chunks = sorted((u for u in units if u.kind == "chunk"), key=lambda u: u.chunk_index or 0)
        index = chunk if channel is None else _chunk_of_channel(view, key, channel)
        if not 0 <= int(index) < len(chunks):
            raise UserInputError(f"--chunk {index}: {key.path} has chunks 0..{len(chunks) - 1}")
        targets.add(chunks[int(index)].id)
    return sorted(view.dependents(targets))


def invalidate(view: RunView, unit_ids: list[str], reason: str = "faust-hpc rerun") -> None:
    """Append an ``invalidated`` record per unit under the manifest lock;
    refused (nothing written) while a launcher that is alive runs one of them."""
    manifest, state = view.manifest, view.state
    manifest.ensure_dir()
    with manifest.lock:
        records, end = manifest.read_from(state.offset)
        state.fold(records)
        state.offset = end
        busy = [uid for uid in unit_ids if (st := state.units.get(uid)) is not None
                and st.status == UnitStatus.RUNNING and state.alive(st.launcher)]
        if busy:
            ls = state.launchers[state.units[busy[0]].launcher]
            more = f" (and {len(busy) - 1} more)" if len(busy) > 1 else ""
            raise RunBusyError(f"{busy[0]}{more} is running now under a launcher of this run ({ls.describe()}); "
                               f"wait for it to finish, or stop that launcher first")
        manifest.write_locked([
            unit_record(uid, UnitEvent.INVALIDATED, attempt=state.units[uid].attempt if uid in state.units else 0,
                        host=hostname(), pid=os.getpid(), error=reason)
            for uid in unit_ids])


__all__ = ["chunk_bounds", "select_units", "invalidate"]
