"""A cheap unit executor for launcher tests and benchmarks (no CASA).

Selected by a run file's ``[scheduler] executor = "tests.units_cheap:run_unit"``.
It honours the executor contract — real output files, written under a
temporary name and renamed into place, a prepare unit reporting its chunk
list — and its behaviour is driven by a JSON control file named by the
environment variable ``FAUST_CHEAP_CONTROL`` (inherited by the unit children):

    {"sleep":   {"<glob on unit id>": seconds | {"seconds": s, "attempts": [1]}},  # first match wins
     "fail":    {"<glob>": {"mode": "raise"|"bad_input"|"diverge"|"exit"|"segfault"|"abort"|"kill9"|"hang",
                            "attempts": [1, 2]}},             # attempts to fail (default: all)
     "gate":    {"<glob>": "/path"},                          # wait until that file exists (<= 120 s)
     "nchunks": {"<glob on prepare id>": n},                  # the real chunk count a prepare reports
     "pad":     {"<glob>": bytes},                            # append this many bytes to the output (fill a disk)
     "estimate": {"<glob>": bytes},                           # what output_estimate says (default: the pad)
     "nchan": 120}                                            # channels per SPW for chunk lists

Outputs live in ``<product_dir>/cheap/<unit id with / → __>.txt`` and their
content is a digest of the unit id and of its dependencies' outputs, so two
runs give byte-identical products exactly when they did the same work.
"""
from __future__ import annotations

import ctypes
import fnmatch
import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from faust_hpc.errors import DivergenceError, UserInputError

ENV = "FAUST_CHEAP_CONTROL"
# what the "diverge" mode raises: the guard's error as NGC 5921's noisy channel 0 gives it
DIVERGE_REASON = ("major-cycle cap reached (17 major cycles done, cap 17 from dirty peak 0.08 Jy / threshold "
                  "0.004 Jy); model flux strongly negative (below -0.04 Jy): channel 0 -1.78 Jy; "
                  "diverging channels: 0")


def control() -> dict:
    path = os.environ.get(ENV)
    if not path or not os.path.exists(path):
        return {}
    return json.loads(Path(path).read_text())


def _match(table: dict, unit_id: str) -> Any:
    for pattern, value in table.items():
        if fnmatch.fnmatchcase(unit_id, pattern):
            return value
    return None


def output_path(spec: Any, unit_id: str) -> Path:
    return Path(spec.product_dir) / "cheap" / (unit_id.replace("/", "__") + ".txt")


def chunk_list(nchan: int, nchunks: int) -> list[list[int]]:
    """[start, nchan] per chunk, contiguous, sizes differing by at most one."""
    base, extra = divmod(nchan, nchunks)
    out, start = [], 0
    for k in range(nchunks):
        n = base + (1 if k < extra else 0)
        out.append([start, n])
        start += n
    return out


def _fail(mode: str) -> None:
    if mode == "raise":
        raise RuntimeError("cheap unit failing on purpose")
    if mode == "bad_input":
        raise UserInputError("cheap unit: its input is bad on purpose")
    if mode == "diverge":   # a runaway clean the guard stopped (deterministic: every attempt)
        raise DivergenceError("nomask", DIVERGE_REASON, nmajordone=17, cap=17, channels=(0,))
    if mode == "exit":
        os._exit(7)
    if mode == "kill9":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "segfault":
        ctypes.string_at(0)  # a real SIGSEGV in this process
    if mode == "abort":
        os.abort()  # SIGABRT, as a failed assertion in CASA's C++ ends a unit
    if mode == "hang":
        while True:
            time.sleep(1)


def run_unit(spec: Any, unit: Any, workdir: Path) -> dict:
    ctl = control()
    attempt = int(os.environ.get("FAUST_HPC_ATTEMPT", "1"))
    fail = _match(ctl.get("fail", {}), unit.id)
    if fail and attempt in fail.get("attempts", [attempt]):
        _fail(fail.get("mode", "raise"))
    gate = _match(ctl.get("gate", {}), unit.id)
    deadline = time.time() + 120
    while gate and not os.path.exists(gate) and time.time() < deadline:
        time.sleep(0.05)
    seconds = _match(ctl.get("sleep", {}), unit.id)
    if isinstance(seconds, dict):
        seconds = seconds["seconds"] if attempt in seconds.get("attempts", [attempt]) else 0
    if seconds:
        time.sleep(float(seconds))
    digest = hashlib.sha256(unit.id.encode())
    for dep in sorted(unit.deps):
        digest.update(output_path(spec, dep).read_bytes())
    info: dict = {}
    body = {"unit": unit.id, "digest": digest.hexdigest()}
    if unit.kind == "prepare":
        n = _match(ctl.get("nchunks", {}), unit.id) or getattr(unit, "nchunks", None) or 1
        chunks = chunk_list(int(ctl.get("nchan", 120)), int(n))
        info = {"nchunks": len(chunks), "chunks": chunks}
        body["chunks"] = chunks
    out = output_path(spec, unit.id)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    pad = int(_match(ctl.get("pad", {}), unit.id) or 0)
    try:
        with open(tmp, "w") as fh:
            fh.write(json.dumps(body, sort_keys=True) + "\n")
            for _ in range(0, pad, 1 << 20):
                fh.write("#" * min(1 << 20, pad))
    except OSError:
        tmp.unlink(missing_ok=True)  # as a careful executor does: no partial product left behind
        raise
    os.replace(tmp, out)
    return {"outputs": [str(out)], "info": info}


def output_estimate(spec: Any, unit: Any) -> int:
    """Bytes the unit will write, for the launcher's free-space check."""
    ctl = control()
    said = _match(ctl.get("estimate", {}), unit.id)
    return int(said if said is not None else (_match(ctl.get("pad", {}), unit.id) or 0))


def partial_outputs(spec: Any, unit: Any) -> list[str]:
    """Temporary files a crashed attempt may have left."""
    out = output_path(spec, unit.id)
    return [str(p) for p in out.parent.glob(out.name + ".tmp*")] if out.parent.exists() else []
