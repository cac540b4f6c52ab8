"""Bad measurement sets are refused before any work: one line, exit 2, nothing written.

Real processes throughout: the ``faust-hpc run`` / ``faust-hpc image``
commands (and ``mpirun``) as subprocesses, on copies of the tiny simulated
data with one thing broken in each: an empty ``<FIELD>-Setup<N>/``, an
empty ``*.ms`` directory, a plain file named ``*.ms``, a garbled SPW table,
a truncated visibility file, an MS without the run's field, a run file
selecting an SPW the MSs lack.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

VENV_BIN = Path(sys.executable).parent
CS = "244.936GHz_CS"


def _cli() -> list[str]:
    exe = VENV_BIN / "faust-hpc"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "faust_hpc"]


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(0, len(data), 7):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _truncate_largest_main_table_file(ms: Path) -> None:
    """Cut the main table's largest storage file (the visibilities) to half."""
    largest = max((p for p in ms.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
    os.truncate(largest, largest.stat().st_size // 2)


def _empty_setup_dir(setup_dir: Path, ms_names: list[str]) -> None:
    for name in ms_names:
        shutil.rmtree(setup_dir / name)


def _empty_ms_dir(setup_dir: Path, ms_names: list[str]) -> None:
    shutil.rmtree(setup_dir / ms_names[0])
    (setup_dir / ms_names[0]).mkdir()


def _plain_file_ms(setup_dir: Path, ms_names: list[str]) -> None:
    shutil.rmtree(setup_dir / ms_names[0])
    (setup_dir / ms_names[0]).write_text("not a measurement set\n")


def _garbled_spw_table(setup_dir: Path, ms_names: list[str]) -> None:
    _garble(setup_dir / ms_names[-1] / "SPECTRAL_WINDOW" / "table.dat")


def _truncated_visibilities(setup_dir: Path, ms_names: list[str]) -> None:
    _truncate_largest_main_table_file(setup_dir / ms_names[0])


BREAKAGES: dict[str, tuple[Callable[[Path, list[str]], None], str]] = {
    "empty Setup directory": (_empty_setup_dir, "no measurement set matching"),
    "empty .ms directory": (_empty_ms_dir, "is not a measurement set: an empty directory"),
    "plain file named .ms": (_plain_file_ms, "is not a measurement set: a plain file"),
    "garbled SPW table": (_garbled_spw_table, "does not open as a measurement set"),
    "truncated visibilities": (_truncated_visibilities, "has an unreadable main table"),
}


def _copy_data(sim, tmp_path: Path, field_dir: str = "CB68-Setup2") -> tuple[Path, Path, list[str]]:
    data = tmp_path / "data"
    setup_dir = data / field_dir
    shutil.copytree(sim.ms_dir, setup_dir)
    names = sorted(p.name for p in setup_dir.iterdir() if p.name.endswith(".ms"))
    assert len(names) == 2, names          # one 12m and one 7m execution block
    return data, setup_dir, names


def _refused(cmd: list[str], tmp_path: Path, needle: str, timeout: float = 300, mpirun: bool = False) -> str:
    """Run ``cmd``: exit 2, one stderr line holding ``needle``, and nothing written
    (no product directory, no CASA log, nothing new next to the run file).
    Under ``mpirun``, its own report of a non-zero exit is not ours to count."""
    before = sorted(p.name for p in tmp_path.iterdir())
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    lines = proc.stderr.strip().splitlines()
    if mpirun:
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        lines = [ln for ln in lines if ln.startswith("faust-hpc")]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1, proc.stderr[-3000:]
    assert needle in lines[0], lines[0]
    assert lines[0].startswith("faust-hpc: error: run.toml: "), lines[0]
    assert not (tmp_path / "products").exists(), sorted(str(p) for p in (tmp_path / "products").rglob("*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not list(tmp_path.glob("*.log")) and not list(tmp_path.rglob(".faust-hpc"))
    return lines[0]


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_run_refuses_a_bad_measurement_set_before_any_work(sim_tiny, make_runfile, tmp_path, breakage):
    data, setup_dir, names = _copy_data(sim_tiny, tmp_path)
    damage, needle = BREAKAGES[breakage]
    damage(setup_dir, names)
    runfile = make_runfile(sim_tiny, tmp_path, run={"data_dir": str(data)})
    line = _refused([*_cli(), "run", str(runfile)], tmp_path, needle)
    if breakage != "empty Setup directory":
        assert str(setup_dir) in line          # names the measurement set


def test_run_refuses_an_ms_without_the_field(sim_tiny, make_runfile, tmp_path):
    """CB68's execution blocks filed under L1527-Setup2: the MSs open, but hold no field L1527."""
    data, _, _ = _copy_data(sim_tiny, tmp_path, field_dir="L1527-Setup2")
    runfile = make_runfile(sim_tiny, tmp_path, run={"data_dir": str(data)}, imaging={"fields": ["L1527"]})
    line = _refused([*_cli(), "run", str(runfile)], tmp_path, 'holds no field "L1527"')
    assert "CB68" in line                      # says which fields it does hold


def test_run_refuses_a_selected_spw_missing_from_the_execution_blocks(sim_tiny, make_runfile, tmp_path):
    runfile = make_runfile(sim_tiny, tmp_path, imaging={"spws": ["245.606GHz_HC3N"]})
    _refused([*_cli(), "run", str(runfile)], tmp_path, 'SPW "245.606GHz_HC3N"')


def test_image_refuses_a_bad_measurement_set_before_writing(sim_tiny, make_runfile, tmp_path):
    data, setup_dir, names = _copy_data(sim_tiny, tmp_path)
    _truncated_visibilities(setup_dir, names)
    runfile = make_runfile(sim_tiny, tmp_path, run={"data_dir": str(data)}, imaging={"spws": [CS]})
    _refused([*_cli(), "image", str(runfile)], tmp_path, "has an unreadable main table")


def test_mpirun_rank0_checks_and_every_rank_stops(sim_tiny, make_runfile, tmp_path):
    data, setup_dir, names = _copy_data(sim_tiny, tmp_path)
    _plain_file_ms(setup_dir, names)
    runfile = make_runfile(sim_tiny, tmp_path, run={"data_dir": str(data)})
    cmd = [str(VENV_BIN / "mpirun"), "-n", "2", "--oversubscribe", sys.executable, "-m", "faust_hpc",
           "run", str(runfile)]
    _refused(cmd, tmp_path, "is not a measurement set: a plain file", mpirun=True)


def test_a_custom_executor_is_not_held_to_the_imaging_inputs(tmp_path):
    """The cheap test executor reads no MS: an empty Setup directory is fine for it."""
    from faust_hpc.inputs import check_inputs
    from faust_hpc.runfile import load_runfile

    (tmp_path / "data" / "CB68-Setup2").mkdir(parents=True)
    path = tmp_path / "run.toml"
    path.write_text('[run]\ndata_dir = "data"\nproduct_dir = "products"\n[imaging]\nfields = ["CB68"]\n'
                    'setup = 2\n[scheduler]\nexecutor = "tests.units_cheap:run_unit"\n')
    check_inputs(load_runfile(path))          # no error, and no CASA child
    assert not (tmp_path / "products").exists()
