"""Helpers for the launcher tests: cheap-unit run files, real mpirun, manifest replay."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
MPIRUN = VENV_BIN / "mpirun"
CS, CONT = "244.936GHz_CS", "246.700GHz_cont"
KEY_CS, KEY_CONT = f"CB68/{CS}/joint/0.5", f"CB68/{CONT}/joint/0.5"


def write_run(tmp_path: Path, name: str = "run", nchunks: dict[str, int] | None = None,
              control: dict | None = None, retries: int = 2, timeout_s: float = 0,
              spws: tuple[str, ...] = (CS, CONT)) -> tuple[Path, dict[str, str]]:
    """A run file whose units are :mod:`tests.units_cheap`, and the environment
    (its control file) to run it with."""
    root = tmp_path / name
    (root / "data" / "CB68-Setup2").mkdir(parents=True, exist_ok=True)
    nchunks = nchunks or {CS: 3, CONT: 3}
    spw_tables = "".join(f'[spw."{label}"]\nnchunks = {n}\n' for label, n in nchunks.items())
    runfile = root / "run.toml"
    runfile.write_text(f"""[run]
name = "{name}"
data_dir = "data"
product_dir = "products"
[imaging]
fields = ["CB68"]
setup = 2
spws = {json.dumps(list(spws))}
{spw_tables}
[scheduler]
executor = "tests.units_cheap:run_unit"
retries = {retries}
unit_timeout_s = {timeout_s}
node_memory_gb = 1000
""")
    ctl = root / "control.json"
    ctl.write_text(json.dumps(control or {}))
    env = dict(os.environ, FAUST_CHEAP_CONTROL=str(ctl), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    return runfile, env


def run_command(runfile: Path, env: dict[str, str], ranks: int | None = None, *extra: str) -> list[str]:
    cli = [str(VENV_BIN / "faust-hpc"), "run", str(runfile), "--progress-every", "1", *extra]
    if ranks is None:
        return cli
    return [str(MPIRUN), "-n", str(ranks), "--oversubscribe", sys.executable, "-m", "faust_hpc",
            "run", str(runfile), "--progress-every", "1", *extra]


def run(runfile: Path, env: dict[str, str], ranks: int | None = None, *extra: str,
        timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(run_command(runfile, env, ranks, *extra), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def start(runfile: Path, env: dict[str, str], ranks: int | None = None, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(run_command(runfile, env, ranks, *extra), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def manifest_path(runfile: Path) -> Path:
    return runfile.parent / "products" / ".faust-hpc" / "manifest.jsonl"


def records(runfile: Path) -> list[dict]:
    from faust_hpc.run.manifest import Manifest

    return Manifest(runfile.parent / "products").records()


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def descendants(pid: int) -> list[int]:
    """pid and every process below it (from /proc), children first listed last."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return out


def kill_tree(pid: int, settle_s: float = 30.0) -> None:
    """kill -9 a whole process tree at once (as a node failure would), and
    return once every one of them is gone (SIGKILL lands asynchronously: a
    process in an fsync keeps running until the write completes)."""
    from faust_hpc.run.claim import pid_alive

    victims = descendants(pid)
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + settle_s
    while any(pid_alive(p) for p in victims) and time.monotonic() < deadline:
        time.sleep(0.05)


def unit_child_pid(runfile: Path, unit_id: str) -> int | None:
    """The pid of the process running ``unit_id`` now: the one whose working
    directory is the unit's (the started record names the launcher, which
    writes it before the child exists)."""
    from faust_hpc.layout import RunLayout

    workdir = str(RunLayout(runfile.parent / "products").unit_workdir(unit_id))
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/cwd") == workdir:
                    return int(entry)
            except OSError:
                continue
    return None


def unit_count(runfile: Path) -> int:
    """Units of the run's plan (the run files here fix their chunk counts): the
    graph's shape is the plan's business, not each test's arithmetic."""
    from faust_hpc.plan import build_plan
    from faust_hpc.runfile import load_runfile

    return len(build_plan(load_runfile(runfile, check_paths=False)).units)


def products(runfile: Path) -> dict[str, bytes]:
    root = runfile.parent / "products" / "cheap"
    return {p.name: p.read_bytes() for p in sorted(root.glob("*.txt"))}


def finish_record(runfile: Path) -> dict:
    return [r for r in records(runfile) if r.get("event") == "finish"][-1]


@contextmanager
def reaped(proc: subprocess.Popen) -> Any:
    """The process, killed with its whole tree if it is still running at the end."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)


def open_gate(proc: subprocess.Popen, gate: Path, timeout: float = 60) -> str:
    """Let a launcher held at a gate file go on, and return its output once it ends."""
    gate.touch()
    out, _ = proc.communicate(timeout=timeout)
    return out
