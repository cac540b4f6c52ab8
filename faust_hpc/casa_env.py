"""The one door to CASA: offline measures data, per-process logs, lazy import.

casatools refuses to import without measures data and, left alone, tries to
download it into ``~/.casa`` and writes ``casa-<timestamp>.log`` into the
working directory (processes started in the same second clobber each other's
logs). Every import of casatools/casatasks in this package goes through
:func:`casatools` / :func:`casatasks` here, which first write a *site config*
for this process naming

- the measures directory: the run file's ``casa_data_dir``, else the
  environment variable ``FAUST_CASA_DATA``, else the data shipped in the
  ``casadata`` package;
- auto-updates off;
- this process's own log file (:func:`configure` ``log_path``, else
  ``FAUST_CASA_LOG``, else ``<tmp>/faust-hpc-casa-<pid>.log``).

``CASASITECONFIG`` is read once, when casatools is first imported, so
:func:`configure` must run before that; later calls can still move the log
with :func:`set_log_file`.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from faust_hpc.errors import UserInputError

log = logging.getLogger(__name__)

ENV_DATA_DIR = "FAUST_CASA_DATA"
ENV_LOG = "FAUST_CASA_LOG"

_state: dict[str, Any] = {"configured": False, "data_dir": None, "log_path": None}


def default_data_dir() -> Path:
    """The measures data inside the installed ``casadata`` package."""
    import casadata  # plain data package: no CASA side effects

    return Path(casadata.__file__).resolve().parent / "__data__"


def resolve_data_dir(casa_data_dir: str | os.PathLike | None = None) -> Path:
    chosen = casa_data_dir or os.environ.get(ENV_DATA_DIR) or default_data_dir()
    path = Path(chosen).expanduser().resolve()
    if not (path / "geodetic").is_dir():
        raise UserInputError(f"CASA data directory {path} has no 'geodetic' folder (measures data); "
                             f"set casa_data_dir in the run file or {ENV_DATA_DIR} to a CASA data directory")
    return path


def _write_site_config(data_dir: Path, log_path: Path) -> Path:
    folder = Path(tempfile.gettempdir()) / f"faust-hpc-siteconfig-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    site = folder / f"casasiteconfig_{os.getpid()}.py"
    site.write_text(
        "# written by faust_hpc.casa_env for one process\n"
        f"measurespath = {str(data_dir)!r}\n"
        f"datapath = [{str(data_dir)!r}]\n"
        "measures_auto_update = False\n"
        "data_auto_update = False\n"
        f"logfile = {str(log_path)!r}\n"
        "nologger = True\n"
        "telemetry_enabled = False\n"
        "crashreporter_enabled = False\n"
    )
    return site


def configure(casa_data_dir: str | os.PathLike | None = None,
              log_path: str | os.PathLike | None = None) -> None:
    """Prepare this process for CASA. Idempotent; a second call before the
    import may change the data directory, after it only the log file."""
    chosen_log = Path(log_path or os.environ.get(ENV_LOG)
                      or Path(tempfile.gettempdir()) / f"faust-hpc-casa-{os.getpid()}.log").resolve()
    chosen_log.parent.mkdir(parents=True, exist_ok=True)
    if _state["configured"] and "casatools" in _imported():
        if casa_data_dir and resolve_data_dir(casa_data_dir) != _state["data_dir"]:
            log.warning("CASA already imported with data %s; ignoring %s", _state["data_dir"], casa_data_dir)
        set_log_file(chosen_log)
        return
    data_dir = resolve_data_dir(casa_data_dir)
    os.environ["CASASITECONFIG"] = str(_write_site_config(data_dir, chosen_log))
    _state.update(configured=True, data_dir=data_dir, log_path=chosen_log)


def _imported() -> set[str]:
    import sys

    return {name for name in ("casatools", "casatasks") if name in sys.modules}


def casatools() -> ModuleType:
    """The casatools module, configured for offline use."""
    if not _state["configured"]:
        configure()
    import casatools as module

    return module


def casatasks() -> ModuleType:
    """The casatasks module (its log follows :func:`set_log_file`)."""
    casatools()
    import casatasks as module

    return module


def set_log_file(path: str | os.PathLike) -> Path:
    """Send this process's CASA log to ``path`` from now on."""
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    _state["log_path"] = target
    if "casatools" in _imported():
        casatools().logsink().setlogfile(str(target))
        if "casatasks" in _imported():
            import casatasks as tasks

            tasks.casalog.setlogfile(str(target))
    return target


def log_path() -> Path | None:
    return _state["log_path"]


def data_dir() -> Path | None:
    return _state["data_dir"]
