"""Warm unit start (issue 12 item 7): units forked by a per-worker fork server.

Real ``faust-hpc run`` commands, real processes, judged by the manifest, the
logs and the products:

- a run of the tiny simulated data gives bit-identical FITS products with
  ``[scheduler] warm_start = false`` (a fresh Python per unit) and with warm
  start, whose units all report that they were forked by one fork server;
- a unit killed by SIGKILL or ending in ``os.abort`` fails alone: the next
  unit (and its retry) start from the same fork server and the run completes;
- a fork server killed under a running unit, or one that stops answering,
  fails that unit only, and the next units start from a new server; a
  worker killed with ``kill -9`` takes its fork server and the unit with it
  (no orphan keeps writing); a rank with more than one thread per unit
  starts units cold and says why;
- each unit's CASA log goes to its own file, warm or cold.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from faust_hpc.plan import build_plan
from faust_hpc.runfile import load_runfile
from tests.launcher_helpers import CS, KEY_CS, records, run, start, unit_child_pid, unit_count, wait_for, write_run
from tests.test_launcher_casa import IMAGING, SPW, SPW_SETTINGS, _science_products
from tests.units_cheap import run_unit as cheap_unit

MARKER = "faust-hpc test marker for unit "


def casa_marker_unit(spec: Any, unit: Any, workdir: Path) -> dict:
    """An executor for the log test: says its unit id in the CASA log (through
    casatools' log sink and casatasks' ``casalog``), then behaves as the cheap unit."""
    from faust_hpc import casa_env

    casa_env.casatools().logsink().post(f"{MARKER}{unit.id} (logsink)", "INFO", "test")
    casa_env.casatasks().casalog.post(f"{MARKER}{unit.id} (casalog)", "INFO", "test")
    return cheap_unit(spec, unit, workdir)


def _scheduler(runfile: Path, *, warm: bool | None = None, executor: str | None = None) -> Path:
    text = runfile.read_text()
    if executor:
        text = text.replace('executor = "tests.units_cheap:run_unit"', f'executor = "{executor}"')
    if warm is not None:
        text += f"warm_start = {'true' if warm else 'false'}\n"  # [scheduler] is the last table
    runfile.write_text(text)
    return runfile


def _by_event(recs: list[dict], event: str) -> list[dict]:
    return [r for r in recs if r.get("event") == event]


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def _hit_while_running(runfile: Path, env: dict, victim: str, hit: Any) -> tuple[int, str, dict]:
    """Start the serial launcher, wait until ``victim`` has started, call
    ``hit(its started record, the launcher)``, and return the launcher's exit
    status and output and that record (the launcher is killed if it is still
    running at the end)."""
    proc = start(runfile, env)
    try:
        rec = wait_for(lambda: next((r for r in records(runfile)
                                     if r.get("unit") == victim and r.get("event") == "started"), None),
                       what="the victim unit to start")
        # the started record names the launcher (written before the child exists): find the child itself
        rec = dict(rec, pid=wait_for(lambda: unit_child_pid(runfile, victim), what="the victim's child process"))
        hit(rec, proc)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, rec


# ---------------------------------------------------------------------------- products
@pytest.mark.casa
def test_warm_and_cold_runs_of_tiny_data_give_bit_identical_products(sim_tiny, make_runfile, tmp_path):
    env = dict(os.environ)
    env.pop("FAUST_DATA_DIR", None)
    runs = {}
    for mode in ("cold", "warm"):
        runfile = make_runfile(sim_tiny, tmp_path / mode, imaging=IMAGING, spw=SPW_SETTINGS,
                               scheduler={"warm_start": mode == "warm"})
        res = subprocess.run([sys.executable, "-m", "faust_hpc", "run", str(runfile)], capture_output=True,
                             text=True, env=env, timeout=1200)
        assert res.returncode == 0, res.stderr[-3000:]
        runs[mode] = runfile.parent / "products"
    for mode, product_dir in runs.items():
        done = _by_event(records(product_dir.parent / "run.toml"), "done")
        assert {r["unit"] for r in done} == set(build_plan(load_runfile(product_dir.parent / "run.toml")).units)
        assert {r["info"]["unit_start"] for r in done} == {mode}
        if mode == "warm":  # one fork server served every unit, and the worker is not it
            servers = {r["info"]["fork_server_pid"] for r in done}
            assert len(servers) == 1 and servers != {r["pid"] for r in done}
    cold, warm = _science_products(runs["cold"]), _science_products(runs["warm"])
    assert f"CB68_{SPW}_12m_0.5_clean.image.pbcor.common.fits" in cold
    assert any(".mom0" in name for name in cold)
    assert cold.keys() == warm.keys()
    for name, data in cold.items():
        assert data.dtype == warm[name].dtype and data.shape == warm[name].shape, name
        assert data.tobytes() == warm[name].tobytes(), f"{name} differs between cold and warm start"


# ---------------------------------------------------------------------------- crashes
def test_killed_or_aborted_warm_unit_fails_alone_and_the_next_starts_from_the_same_server(tmp_path):
    killed, aborted = f"{KEY_CS}/chunk00", f"{KEY_CS}/chunk01"
    runfile, env = write_run(tmp_path, nchunks={CS: 3}, spws=(CS,), retries=1,
                             control={"fail": {killed: {"mode": "kill9", "attempts": [1]},
                                               aborted: {"mode": "abort", "attempts": [1]}}})
    res = run(runfile, env)
    assert res.returncode == 0, res.stdout + res.stderr
    recs = records(runfile)
    failed = {r["unit"]: r for r in _by_event(recs, "failed")}
    assert failed.keys() == {killed, aborted}
    assert "SIGKILL" in failed[killed]["error"] and "SIGABRT" in failed[aborted]["error"]
    done = _by_event(recs, "done")
    assert len(done) == unit_count(runfile) and {r["unit"]: r["attempt"] for r in done}[killed] == 2
    assert {r["info"]["unit_start"] for r in done} == {"warm"}
    assert len({r["info"]["fork_server_pid"] for r in done}) == 1
    # the crashed attempts were forked (warm) too
    for unit in failed:
        out = runfile.parent / "products" / "logs" / f"{unit.replace('/', '__')}.attempt1.out"
        assert f"unit {unit} attempt 1: warm start" in out.read_text()


@pytest.mark.parametrize("sig, sleep_s, error", [(signal.SIGKILL, 60, "fork server died"),
                                                  (signal.SIGSTOP, 2, "fork server stopped answering")],
                         ids=["killed", "stopped"])
def test_dead_or_silent_fork_server_fails_its_running_unit_only_and_is_replaced(tmp_path, sig, sleep_s, error):
    """A fork server killed under a running unit (which dies with it), or one
    that stops reporting (SIGSTOP) while its unit ends: that attempt fails
    (after a bounded wait), the server is replaced, the retry and the later
    units start from the new one, and the run completes."""
    victim = f"{KEY_CS}/chunk00"
    runfile, env = write_run(tmp_path, nchunks={CS: 2}, spws=(CS,), retries=1,
                             control={"sleep": {victim: {"seconds": sleep_s, "attempts": [1]}}})
    servers = []

    def hit_server(rec: dict, launcher: subprocess.Popen) -> None:
        servers.append(_ppid(rec["pid"]))
        assert servers[0] != launcher.pid
        os.kill(servers[0], sig)

    status, out, rec = _hit_while_running(runfile, env, victim, hit_server)
    assert status == 0, out
    (server,) = servers
    recs = records(runfile)
    (failed,) = _by_event(recs, "failed")
    assert failed["unit"] == victim and error in failed["error"]
    assert _gone(rec["pid"]) and _gone(server)
    done = _by_event(recs, "done")
    assert {r["info"]["unit_start"] for r in done} == {"warm"}
    assert {r["unit"]: r["attempt"] for r in done}[victim] == 2
    before = {r["info"]["fork_server_pid"] for r in done if r["time"] < failed["time"]}
    after = {r["info"]["fork_server_pid"] for r in done if r["time"] > failed["time"]}
    assert before == {server} and after and server not in after


def test_fork_server_and_its_unit_die_with_their_worker(tmp_path):
    victim = f"{KEY_CS}/chunk00"
    runfile, env = write_run(tmp_path, nchunks={CS: 2}, spws=(CS,),
                             control={"sleep": {victim: 60}})
    seen = {}

    def kill_worker(rec: dict, launcher: subprocess.Popen) -> None:
        seen.update(child=rec["pid"], server=_ppid(rec["pid"]))
        assert _ppid(seen["server"]) == launcher.pid
        launcher.kill()  # the worker (here the serial launcher) alone

    _hit_while_running(runfile, env, victim, kill_worker)
    wait_for(lambda: _gone(seen["server"]) and _gone(seen["child"]), timeout=20,
             what="the fork server and its unit to die")


# ---------------------------------------------------------------------------- logs
@pytest.mark.casa
@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_each_units_casa_log_is_its_own_file(tmp_path, warm):
    runfile, env = write_run(tmp_path, nchunks={CS: 2}, spws=(CS,))
    _scheduler(runfile, warm=warm, executor="tests.test_forkserver:casa_marker_unit")
    res = run(runfile, env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    done = _by_event(records(runfile), "done")
    assert len(done) == unit_count(runfile)
    assert {r["info"]["unit_start"] for r in done} == {"warm" if warm else "cold"}
    units = {r["unit"] for r in done}
    for rec in done:
        text = Path(rec["log"]).read_text()
        said = {line.split(MARKER, 1)[1].split(" (")[0] for line in text.splitlines() if MARKER in line}
        assert said == {rec["unit"]}, (rec["log"], said)
        assert f"{MARKER}{rec['unit']} (logsink)" in text and f"{MARKER}{rec['unit']} (casalog)" in text
    # nothing of the units in any other CASA log (the fork server's, a stray casa-*.log)
    logs = set(Path(runfile.parent / "products" / "logs").glob("*.casa.log"))
    assert {Path(r["log"]) for r in done} == logs
    assert not list(Path(runfile.parent / "products").rglob("casa-*.log"))
    assert len(units) == unit_count(runfile)


def test_warm_start_must_be_true_or_false(tmp_path):
    runfile, env = write_run(tmp_path, nchunks={CS: 2}, spws=(CS,))
    runfile.write_text(runfile.read_text() + 'warm_start = "yes"\n')
    res = run(runfile, env)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert "[scheduler] warm_start: expected true or false" in line, line
    assert not (runfile.parent / "products").exists()


def test_units_with_more_than_one_thread_start_cold_and_say_why(tmp_path):
    runfile, env = write_run(tmp_path, nchunks={CS: 2}, spws=(CS,))
    runfile.write_text(runfile.read_text() + "threads_per_unit = 2\n")
    res = run(runfile, env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "units start cold: warm start needs threads_per_unit = 1" in res.stderr
    done = _by_event(records(runfile), "done")
    assert len(done) == unit_count(runfile) and {r["info"]["unit_start"] for r in done} == {"cold"}
    assert {r["threads"] for r in _by_event(records(runfile), "started")} == {2}
