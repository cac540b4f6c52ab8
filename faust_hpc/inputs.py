"""The measurement sets of a run, checked before any work and before anything is written.

A bad MS found by a unit costs retries, log files and a manifest; found here
it costs one line and exit status 2. For every field of the run file, every
``*.ms`` that the data layout's glob finds under ``<data_dir>/<FIELD>-Setup<N>/``
(a run file's target: every MS its ``data`` names) must

- be a directory holding a CASA table (not a plain file, not empty),
- open as a measurement set (msmetadata) and hold the field,
- have a readable main table (the first and last row of its data and flag
  columns are read, so a truncated storage-manager file shows here),

and every array kind of the run must find its execution blocks and, in each,
an SPW for every selected label (a run file's window: the SPW its ``spw``
names, or one covering its rest frequency at vsys): the imaging layer's own
:meth:`DataSet.vis <faust_hpc.imaging.dataset.DataSet.vis>`,
:func:`~faust_hpc.imaging.dataset.spw_ids_for_ot_name` and
:func:`~faust_hpc.imaging.dataset.spw_ids_for_window` answer that, so the
check and the units can never disagree.

CASA runs in a child process (``python -m faust_hpc.inputs JOB``) in a
temporary directory that is removed afterwards: a corrupt table can crash
casacore, and the launcher's rank 0 neither loads CASA nor writes CASA's log
into the product directory. The child reports through a file, since CASA
writes its own lines to stdout and stderr.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faust_hpc.errors import DataError
from faust_hpc.runfile import IMAGING_EXECUTOR

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 1800.0
"""Metadata of a few dozen FAUST execution blocks opens in well under a minute;
a check that takes half an hour is hung on the filesystem."""
_DATA_COLUMNS = ("DATA", "CORRECTED_DATA", "FLAG")


@dataclass(frozen=True)
class MsJob:
    """What the check needs from a run file (plain values: it crosses a process boundary)."""

    runfile_name: str
    data_dir: str
    fields: tuple[str, ...]
    # per Setup of the run: (setup, its array kinds, its SPW labels) -- a whole-program run has several
    setups: tuple[tuple[int, tuple[str, ...], tuple[str, ...]], ...]
    casa_data_dir: str | None
    runfile: str = ""   # loaded again by the child: the run file's targets and windows join its catalog

    @classmethod
    def of(cls, spec: Any) -> "MsJob":
        return cls(runfile_name=Path(spec.path).name, data_dir=str(spec.data_dir), fields=tuple(spec.fields),
                   setups=_setup_groups(spec),
                   casa_data_dir=None if spec.casa_data_dir is None else str(spec.casa_data_dir),
                   runfile=str(spec.path))


def _setup_groups(spec: Any) -> tuple[tuple[int, tuple[str, ...], tuple[str, ...]], ...]:
    """(Setup, array kinds, SPW labels) of each Setup the run images, in run-file order."""
    labels: dict[int, list[str]] = {}
    for label in spec.spw_labels:
        labels.setdefault(spec.setup_of(label), []).append(label)
    return tuple((setup, spec.arrays_for(group[0]), tuple(group)) for setup, group in labels.items())


def check_inputs(spec: Any) -> None:
    """The data checks of a run's executor: the measurement sets for the imaging
    executor; a custom ``[scheduler] executor`` reads its own inputs."""
    if spec.scheduler.executor == IMAGING_EXECUTOR:
        check_measurement_sets(spec)
    else:
        log.debug("executor %s: no measurement-set check", spec.scheduler.executor)


def check_measurement_sets(spec: Any) -> None:
    """Raise :class:`DataError` (one line) unless every MS of the run is usable."""
    job = MsJob.of(spec)
    with tempfile.TemporaryDirectory(prefix="faust-hpc-mscheck-") as tmp:
        job_path, report = Path(tmp) / "job.json", Path(tmp) / "report.txt"
        job_path.write_text(json.dumps(job.__dict__))
        env = dict(os.environ, FAUST_CASA_LOG=str(Path(tmp) / "casa.log"))
        try:
            proc = subprocess.run([sys.executable, "-m", "faust_hpc.inputs", str(job_path), str(report)],
                                  cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, timeout=CHECK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DataError(f"{job.runfile_name}: [run] data_dir: the measurement sets under {job.data_dir} "
                            f"could not be read in {CHECK_TIMEOUT_S:.0f} s (a hung filesystem?)") from None
        lines = report.read_text().splitlines() if report.exists() else []
    verdict = lines[-1] if lines else ""
    if verdict == "ok":
        return
    if verdict.startswith("error "):
        raise DataError(verdict.removeprefix("error "))
    tail = (proc.stderr or "").strip().splitlines()
    last = f" last message: {_one_line(tail[-1])}" if tail else ""
    checking = next((ln.removeprefix("checking ") for ln in reversed(lines) if ln.startswith("checking ")), "")
    if not checking:  # it died before opening any MS: not the data's fault
        raise RuntimeError(f"the measurement-set check failed (exit status {proc.returncode}).{last}")
    raise DataError(f"{job.runfile_name}: [run] data_dir: CASA crashed (exit status {proc.returncode}) while "
                    f"reading {checking}; is it a complete measurement set?{last}")


# ----------------------------------------------------------------------------
# The child: CASA runs here
# ----------------------------------------------------------------------------

def _one_line(text: object, limit: int | None = 300) -> str:
    """CASA's multi-line exception text as one line (shortened: the path is in the message already)."""
    line = " ".join(str(text).split())
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


def _check_structure(ms: Path) -> str | None:
    """Why ``ms`` cannot be a measurement set, from the filesystem alone (None: it may be)."""
    if not ms.is_dir():
        return "is not a measurement set: a plain file (a measurement set is a directory of CASA tables)"
    if not any(ms.iterdir()):
        return "is not a measurement set: an empty directory"
    if not (ms / "table.dat").is_file():
        return "is not a measurement set: it holds no table.dat (not a CASA table)"
    return None


def _check_opens(tools: Any, ms: Path, field: str) -> str | None:
    """Why ``ms`` does not open as a measurement set holding ``field`` (None: it does)."""
    msmd = tools.msmetadata()
    try:
        msmd.open(str(ms))
        names = list(msmd.fieldnames())
    except RuntimeError as exc:
        return f"does not open as a measurement set: {_one_line(exc)}"
    finally:
        msmd.close()
        msmd.done()
    if field not in names:
        return f'holds no field "{field}" (its fields: {", ".join(names) or "none"})'
    tb = tools.table()
    try:
        tb.open(str(ms))
        rows = int(tb.nrows())
        columns = [c for c in _DATA_COLUMNS if c in tb.colnames()]
        for row in sorted({0, rows - 1}) if rows > 0 else []:
            for column in columns:
                tb.getcell(column, row)
    except RuntimeError as exc:
        return f"has an unreadable main table: {_one_line(exc)}"
    finally:
        tb.close()
    return None


def run_checks(job: MsJob, report: Any) -> None:
    """Every check, in this process (CASA loads here); progress and the verdict go to ``report``.
    The imaging layer is imported here, in the child only: the launcher's rank 0 never loads it."""
    from faust_hpc import casa_env, catalog
    from faust_hpc.errors import UserInputError
    from faust_hpc.imaging.dataset import DataSet, spw_ids_for_ot_name, spw_ids_for_window

    if job.runfile:
        from faust_hpc.runfile import load_runfile

        load_runfile(job.runfile, check_paths=False)   # its [target] and [window] names
    casa_env.configure(job.casa_data_dir)
    tools = casa_env.casatools()
    where = f"{job.runfile_name}: [run] data_dir:"
    try:
        for field in job.fields:
            target = catalog.get_target(field)
            where = f"{job.runfile_name}: [run] data_dir:" if target.faust else \
                f'{job.runfile_name}: [target."{field}"] data:'
            for setup, arrays, labels in job.setups:
                found = DataSet(field, setup, arrays[0], data_dir=job.data_dir).find_all_ms()
                for ms in map(Path, found):
                    print(f"checking {ms}", file=report, flush=True)
                    problem = _check_structure(ms) or _check_opens(tools, ms, field)
                    if problem:
                        raise DataError(f"{where} {ms} {problem}")
                for kind in arrays:
                    print(f"checking the {kind} execution blocks of {field} for their SPWs", file=report, flush=True)
                    vis = DataSet(field, setup, kind, data_dir=job.data_dir).vis
                    for label in labels:
                        spw = catalog.get_spw(label)
                        if spw.is_window:
                            try:
                                spw_ids_for_window(vis, spw, field, target.vsys)
                            except UserInputError as exc:
                                raise DataError(f'{job.runfile_name}: [window."{label}"] {exc}') from None
                        else:
                            spw_ids_for_ot_name(vis, spw.ot_name, label=label)
    except UserInputError as exc:
        message = str(exc)
        line = message if message.startswith(job.runfile_name) else f"{where} {message}"
        print(f"error {_one_line(line, limit=None)}", file=report, flush=True)
        return
    print("ok", file=report, flush=True)


def main(argv: list[str]) -> int:
    job_path, report_path = argv
    raw = json.loads(Path(job_path).read_text())
    raw["setups"] = [(setup, tuple(arrays), tuple(labels)) for setup, arrays, labels in raw["setups"]]
    job = MsJob(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    with open(report_path, "a") as report:
        run_checks(job, report)
    return 0


if __name__ == "__main__":  # pragma: no cover - the child process
    sys.exit(main(sys.argv[1:]))
