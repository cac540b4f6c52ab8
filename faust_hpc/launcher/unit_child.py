"""The child process that runs exactly one unit: ``python -m faust_hpc.launcher.unit_child TASK``
(a cold start), or a child forked by the worker's fork server
(:mod:`faust_hpc.launcher.forkserver`, a warm start); both run :func:`run`.

Why a separate process per unit: a CASA segfault, an out-of-memory kill or a
timeout then ends this process only, and the worker rank reports the unit as
failed and carries on. The task file (pickled by the worker) holds the run
spec (or the run file path), the unit, the executor's import path, the working
directory and the per-unit CASA log; the result goes back as a small JSON file
with output *paths*, never payloads. When the unit raises, the traceback goes
to its own file (the worker records that path, so ``faust-hpc run``'s summary
and ``faust-hpc status`` point at it) and the result says whether another
attempt could help: bad input (:class:`~faust_hpc.errors.UserInputError`)
cannot.
"""
from __future__ import annotations

import ctypes
import importlib
import json
import logging
import os
import pickle
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from faust_hpc.errors import DivergenceError, UserInputError
from faust_hpc.launcher import space
from faust_hpc.run.fingerprint import fingerprints

log = logging.getLogger("faust_hpc.launcher.unit_child")

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """If the worker rank is killed (kill -9, node job teardown), take this
    unit down with it, so no orphan keeps writing products into a run that a
    later launcher is resuming. (A warm unit's parent is its worker's fork
    server, which does the same with its worker.)"""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(137)


def load_executor(path: str) -> Callable[..., Any]:
    """``"package.module:function"`` → the function."""
    module_name, _, func_name = path.partition(":")
    if not module_name or not func_name:
        raise ValueError(f"executor {path!r} is not of the form 'package.module:function'")
    return getattr(importlib.import_module(module_name), func_name)


def result_fields(result: Any) -> tuple[list[str], dict]:
    """Accept the executor's UnitResult (``.outputs``, ``.info``), a dict, or a list of outputs."""
    if result is None:
        return [], {}
    if isinstance(result, dict):
        return [str(p) for p in result.get("outputs", [])], dict(result.get("info") or {})
    if isinstance(result, (list, tuple)) and not hasattr(result, "outputs"):
        return [str(p) for p in result], {}
    return [str(p) for p in getattr(result, "outputs", [])], dict(getattr(result, "info", None) or {})


def _load_spec(task: dict) -> Any:
    if task.get("spec") is not None:
        return task["spec"]
    from faust_hpc.runfile import load_runfile

    return load_runfile(task["runfile"], check_paths=False)


def _write_result(path: Path, result: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, path)


def _write_traceback(path: str | None, text: str) -> None:
    if not path:
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:  # the .out file has it too
        log.warning("could not write the traceback to %s: %s", path, exc)


def divergence_fields(exc: DivergenceError) -> dict[str, Any]:
    """What a diverged unit's records say about its runaway clean
    (:attr:`faust_hpc.run.records.UnitRecord.diverged`)."""
    return {"stage": exc.stage, "reason": exc.reason, "nmajordone": int(exc.nmajordone), "cap": int(exc.cap),
            "channels": [int(c) for c in exc.channels]}


def run(task_path: Path, start: str, parent_pid: int | None = None) -> int:
    """Run the unit of one task file in this process (which exists for it
    alone) and write its result file; the exit status. The one implementation
    for both ways a unit's process starts: ``start`` is ``"cold"`` (a fresh
    ``python -m faust_hpc.launcher.unit_child``, whose parent is the worker
    named in the task) or ``"warm"`` (forked by the worker's fork server,
    ``parent_pid``), and goes into the result's ``info`` as ``unit_start``."""
    t_entry = time.time()
    task = pickle.loads(Path(task_path).read_bytes())
    parent_pid = task["parent_pid"] if parent_pid is None else parent_pid
    die_with_parent(parent_pid)
    # Walltime drain signals are for the launcher; the unit keeps running.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    result_path = Path(task["result_path"])
    workdir = Path(task["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)  # CASA drops scratch files into the cwd: keep them per unit
    os.environ["FAUST_HPC_ATTEMPT"] = str(task.get("attempt", 1))
    os.environ["FAUST_HPC_UNIT_LOG"] = str(task["log_path"])
    start_info: dict[str, Any] = {"unit_start": start}
    if start == "warm":
        start_info["fork_server_pid"] = parent_pid
    log.info("unit %s attempt %s: %s start (%.3f s after the worker asked)", getattr(task["unit"], "id", "?"),
             task.get("attempt", 1), start, t_entry - float(task.get("requested_at", t_entry)))
    t0 = time.time()
    spec: Any = None
    try:
        spec = _load_spec(task)
        from faust_hpc import casa_env

        casa_env.configure(getattr(spec, "casa_data_dir", None), log_path=task["log_path"])
        executor = load_executor(task["executor"])
        module = importlib.import_module(task["executor"].partition(":")[0])  # imported by load_executor
        space.check_free(spec.product_dir, task["unit"], space.output_estimate_bytes(module, spec, task["unit"]))
        outputs, info = result_fields(executor(spec, task["unit"], workdir))
        missing = [p for p in outputs if not os.path.exists(p)]
        if missing:
            raise RuntimeError(f"executor reported outputs that do not exist: {missing[:3]}")
        _write_result(result_path, {"status": "done", "outputs": outputs, "info": {**info, **start_info},
                                    "checks": fingerprints(outputs), "elapsed": time.time() - t0})
        return 0
    except BaseException as exc:  # noqa: BLE001 - everything is a unit failure here
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        _write_traceback(task.get("traceback_path"), tb)
        full = space.exception_is_enospc(exc) or space.logs_say_no_space([task["log_path"]])
        spec_dir = getattr(spec, "product_dir", None)
        diverged = isinstance(exc, DivergenceError)
        _write_result(result_path, {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                    "error_type": type(exc).__name__,
                                    "retry": not isinstance(exc, (UserInputError, DivergenceError)),
                                    "no_space": str(spec_dir) if full and spec_dir else None,
                                    "diverged": divergence_fields(exc) if diverged else None,
                                    "info": start_info, "elapsed": time.time() - t0})
        return 1


def main(argv: list[str]) -> int:
    """The cold start: ``python -m faust_hpc.launcher.unit_child TASK``."""
    return run(Path(argv[0]), "cold")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
