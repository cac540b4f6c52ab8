"""A full disk is no CASA bug: recognise it, say where, and stop.

Why: with the products on a full filesystem CASA fails in many ways
("de/gridding failed", SIGABRT, a truncated table) and none names the disk;
retrying only burns attempts. A unit's child therefore (1) checks before it
starts that its output estimate fits the free space of the product
directory, and (2) when it fails, looks for ENOSPC in its exception chain and
for "No space left on device" in its CASA log and stdout. Either way the
failure carries ``no_space = <path>``, and the coordinator stops handing out
units (a drain, exit 3) instead of retrying: free space, run again.
"""
from __future__ import annotations

import errno
import os
import shutil
from typing import Any, Iterable


NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded")
_TAIL_BYTES = 256 * 1024
NEARLY_FULL_BYTES = 1 << 20   # less free than this after a failure: the disk filled up


class NoSpaceError(OSError):
    """The product directory's filesystem cannot hold what a unit writes."""

    def __init__(self, path: str | os.PathLike, detail: str = "") -> None:
        super().__init__(errno.ENOSPC, no_space_message(path) + (f" ({detail})" if detail else ""))
        self.path = str(path)


def no_space_message(path: str | os.PathLike) -> str:
    return f"no space left on {path}"


def output_estimate_bytes(executor_module: Any, spec: Any, unit: Any) -> int:
    """What a unit will write: the executor module's own
    ``output_estimate(spec, unit)`` (bytes) if it has one, else the cost
    model's estimate for the imaging units (``Unit.out_gb``)."""
    own = getattr(executor_module, "output_estimate", None)
    if own is not None:
        return int(own(spec, unit))
    return int(max(0.0, float(getattr(unit, "out_gb", 0.0) or 0.0)) * 1e9)


def check_free(product_dir: str | os.PathLike, unit: Any, need: int) -> None:
    """Raise :class:`NoSpaceError` if ``need`` bytes (``unit``'s output estimate) do not fit."""
    if need <= 0:
        return
    free = shutil.disk_usage(product_dir).free
    if free < need:
        raise NoSpaceError(product_dir, f"{free / 1e9:.3g} GB free, {unit.id} needs about {need / 1e9:.3g} GB")


def exception_is_enospc(exc: BaseException | None) -> bool:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(exc) for text in NO_SPACE_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def logs_say_no_space(paths: Iterable[str | os.PathLike | None]) -> bool:
    """Does the end of any of these logs (CASA log, the child's stdout) report ENOSPC?"""
    for path in paths:
        if not path:
            continue
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(max(0, size - _TAIL_BYTES))
                tail = fh.read().decode("utf-8", "replace")
        except OSError:
            continue
        if any(text in tail for text in NO_SPACE_TEXT):
            return True
    return False


__all__ = ["NoSpaceError", "no_space_message", "output_estimate_bytes", "check_free", "exception_is_enospc",
           "logs_say_no_space"]
