"""``faust-hpc rerun RUNFILE --spw LABEL [--channel N | --chunk K]``.

The documented restart-one-chunk workflow in batch form: invalidate the
chosen units and everything downstream of them (finalize, moments, QA) in the
manifest, so the next ``faust-hpc run`` redoes exactly those. A channel is
mapped to its chunk through the chunk list the run froze (the prepare unit's
record), so the chunk is the one that holds that channel in *this* run.
"""
from __future__ import annotations

import argparse
import os

from faust_hpc.errors import UserInputError

HELP = "invalidate units of one SPW (all, one chunk, or the chunk of one channel) so the next run redoes them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runfile", help="the run file (TOML)")
    parser.add_argument("--spw", required=True, metavar="LABEL", help="SPW label, e.g. 244.936GHz_CS")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--channel", type=int, metavar="N", help="redo the chunk holding channel N (0-based)")
    which.add_argument("--chunk", type=int, metavar="K", help="redo chunk K (0-based)")
    parser.add_argument("--field", help="only this field (default: every field of the run)")
    parser.add_argument("--array", help="only this array kind (default: all of the run)")
    parser.add_argument("--weighting", help="only this weighting, as in unit ids, e.g. 0.5 (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be invalidated, change nothing")


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


def run(args: argparse.Namespace) -> int:
    from faust_hpc.launcher.runview import load_view
    from faust_hpc.manifest import RunClaim, hostname, unit_record

    view = load_view(args.runfile)
    spec = view.spec
    if args.spw not in spec.spw_labels:
        raise UserInputError(f"--spw {args.spw!r} is not imaged by {spec.path.name}; "
                             f"choose one of: {', '.join(spec.spw_labels)}")
    keys = {u.key for u in view.plan.units.values()
            if u.key.label == args.spw and (args.field is None or u.key.field == args.field)
            and (args.array is None or u.key.array == args.array)
            and (args.weighting is None or u.key.weighting == args.weighting)}
    if not keys:
        raise UserInputError(f"no image of SPW {args.spw} matches --field/--array/--weighting in {spec.path.name}")
    targets: set[str] = set()
    for key in sorted(keys):
        units = [u for u in view.plan.units.values() if u.key == key]
        if args.chunk is None and args.channel is None:
            targets |= {u.id for u in units}
            continue
        chunks = sorted((u for u in units if u.kind == "chunk"), key=lambda u: u.chunk_index or 0)
        index = args.chunk
        if args.channel is not None:
            prep = view.states.get(key.unit_id("prepare"))
            frozen = (prep.info.get("chunks") if prep is not None and prep.status == "done" else None)
            if not frozen:
                raise UserInputError(f"{key.path}: the chunk list is not known until its prepare unit has run; "
                                     f"run first, or name the chunk with --chunk K")
            index = None
            for k, entry in enumerate(frozen):
                start, n = chunk_bounds(entry)
                if start <= args.channel < start + n:
                    index = k
                    break
            if index is None:
                last = sum(chunk_bounds(e)[1] for e in frozen) - 1
                raise UserInputError(f"--channel {args.channel}: {key.path} has channels 0..{last}")
        if not 0 <= int(index) < len(chunks):
            raise UserInputError(f"--chunk {index}: {key.path} has chunks 0..{len(chunks) - 1}")
        targets.add(chunks[int(index)].id)
    chosen = sorted(view.dependents(targets))
    if args.dry_run:
        for uid in chosen:
            print(f"would invalidate {uid}")
        return 0
    claim = RunClaim(spec.product_dir).acquire(command="faust-hpc rerun")
    try:
        records = [unit_record(uid, "invalidated", attempt=view.states[uid].attempt if uid in view.states else 0,
                               host=hostname(), pid=os.getpid(), error="faust-hpc rerun")
                   for uid in chosen]
        view.manifest.append(*records)
    finally:
        claim.release()
    for uid in chosen:
        print(f"invalidated {uid}")
    print(f"{len(chosen)} unit(s) will be redone by the next `faust-hpc run {args.runfile}`")
    return 0
