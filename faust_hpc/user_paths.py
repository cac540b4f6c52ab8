"""The original API's settable module globals: directories and extension names.

The original pipeline kept ``PROD_DIR``, ``DATA_DIR``, ``IMAG_DIR``,
``MOMA_DIR``, ``PLOT_DIR`` and the extension names ``DIRTY_EXT``,
``NOMSK_EXT`` (here also ``NOMASK_EXT``) and ``TINYIMG_EXT`` as module
globals that users assign (``faust_imaging.PLOT_DIR = ...``) and that the
code reads when it needs them. Here they live in this one small module, which
imports nothing of the imaging or products layers, so both layers read the
same values without importing each other.

``IMAG_DIR``, ``MOMA_DIR`` and ``PLOT_DIR`` follow ``PROD_DIR`` (through
:class:`~faust_hpc.layout.RunLayout`) unless they were assigned themselves.
:class:`SettableGlobals` makes a module's attributes of these names read and
write this state, so ``faust_hpc.imaging.PROD_DIR = ...`` takes effect.
"""
from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

from faust_hpc import layout

DIR_NAMES = ("PROD_DIR", "DATA_DIR", "IMAG_DIR", "MOMA_DIR", "PLOT_DIR")
EXT_NAMES = ("DIRTY_EXT", "NOMASK_EXT", "NOMSK_EXT", "TINYIMG_EXT")
NAMES = DIR_NAMES + EXT_NAMES
_EXT_ALIASES = {"NOMSK_EXT": "NOMASK_EXT"}   # the original's spelling
_EXT_DEFAULTS = {"DIRTY_EXT": layout.DIRTY_EXT, "NOMASK_EXT": layout.NOMASK_EXT,
                 "TINYIMG_EXT": layout.TINYIMG_EXT}

_state: dict[str, Any] = {}


def _resolved(value: str | os.PathLike) -> Path:
    return Path(value).expanduser().resolve()


def reset() -> None:
    """Back to the defaults: ``FAUST_PROD_DIR`` / ``FAUST_DATA_DIR`` or the current directory."""
    _state.clear()
    _state["PROD_DIR"] = _resolved(os.environ.get("FAUST_PROD_DIR", "."))
    _state["DATA_DIR"] = _resolved(os.environ.get("FAUST_DATA_DIR", "."))
    _state.update(_EXT_DEFAULTS)


def get(name: str) -> Any:
    """The current value of one documented global."""
    name = _EXT_ALIASES.get(name, name)
    if name in _state:
        return _state[name]
    run = layout.RunLayout(_state["PROD_DIR"])
    derived = {"IMAG_DIR": run.images_dir, "MOMA_DIR": run.moments_dir, "PLOT_DIR": run.plots_dir}
    if name in derived:
        return derived[name]
    raise AttributeError(name)


def is_assigned(name: str) -> bool:
    """Whether a directory global was assigned itself (not derived from PROD_DIR)."""
    return name in _state


def assign(name: str, value: Any) -> None:
    """Assign one documented global (directories are made absolute)."""
    name = _EXT_ALIASES.get(name, name)
    if name in DIR_NAMES:
        _state[name] = _resolved(value)
    elif name in _EXT_DEFAULTS:
        _state[name] = str(value)
    else:
        raise AttributeError(name)


def set_paths(prod_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None) -> None:
    """Set PROD_DIR (and the images/moments/plots folders below it) and DATA_DIR."""
    if prod_dir is not None:
        for name in ("IMAG_DIR", "MOMA_DIR", "PLOT_DIR"):
            _state.pop(name, None)
        assign("PROD_DIR", prod_dir)
    if data_dir is not None:
        assign("DATA_DIR", data_dir)


def prod_dir() -> Path:
    return get("PROD_DIR")


def data_dir() -> Path:
    return get("DATA_DIR")


def image_dir() -> Path:
    return get("IMAG_DIR")


def moment_dir() -> Path:
    return get("MOMA_DIR")


def plot_dir() -> Path:
    return get("PLOT_DIR")


class SettableGlobals(types.ModuleType):
    """A module whose documented globals are read from and written to this
    module's state (``sys.modules[__name__].__class__ = SettableGlobals``)."""

    def __getattr__(self, name: str) -> Any:
        if name in NAMES:
            return get(name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in NAMES:
            assign(name, value)
        else:
            super().__setattr__(name, value)


reset()

__all__ = ["NAMES", "get", "assign", "is_assigned", "set_paths", "reset", "prod_dir", "data_dir", "image_dir", "moment_dir",
           "plot_dir", "SettableGlobals"]
