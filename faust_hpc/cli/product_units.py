"""The moments / qa units of a run, for ``faust-hpc moments`` and ``faust-hpc qa``.

Both commands run just those units of the run's plan through the launcher's
serial mode (same executor, manifest, resume and leases as ``faust-hpc
run``), so one run file gives the same maps from either path. A unit runs
when its finalize is done (recorded in the manifest, or its cube is on disk);
if none can, the command says so in one line and exits 2.
"""
from __future__ import annotations

from typing import Any


def run_product_units(runfile: str, kind: str, params: dict[str, Any], overwrite: bool) -> int:
    """Run the ``kind`` units; print their files, and the cubes not imaged yet.
    Exit status: the run's (0 / 1 failed / 3 drained), or 1 if some cubes are missing."""
    from faust_hpc.launcher import run_serial
    from faust_hpc.run.images import run_images
    from faust_hpc.run.records import UnitStatus
    from faust_hpc.run.select import Selection
    from faust_hpc.runfile import load_runfile

    spec = load_runfile(runfile, check_paths=False)
    selection = Selection(kinds=frozenset({kind}), params=tuple(sorted(params.items())), redo=overwrite)
    result = run_serial(spec, selection, command=f"faust-hpc {kind}")
    states = result.manifest.states()
    for uid in result.units:
        st = states.get(uid)
        if st is not None and st.status == UnitStatus.DONE:
            for path in st.outputs:
                print(path)
    images = {im.key: im for im in run_images(spec)}
    for unit in result.unready:
        print(f"missing (not imaged yet): {images[unit.key].image}")
    return result.summary.exit_status or (1 if result.unready else 0)
