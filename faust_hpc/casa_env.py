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

:func:`preload` is for a process that will ``fork`` unit children (the
per-worker fork server, :mod:`faust_hpc.launcher.forkserver`): it loads
CASA's compiled libraries and the Python packages casatasks imports, but not
casatools' initialisation, which starts gRPC threads (its log sink) and reads
the site config; each child then initialises CASA itself, cheaply, with its
own log file, exactly as a fresh process would.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from faust_hpc.errors import UserInputError

log = logging.getLogger(__name__)

ENV_DATA_DIR = "FAUST_CASA_DATA"
ENV_LOG = "FAUST_CASA_LOG"

_state: dict[str, Any] = {"configured": False, "data_dir": None, "log_path": None}

# The slow, thread-free imports under ``import casatasks`` (measured with
# ``python -X importtime``: ~2.5 s of its ~3 s are these, not CASA itself).
THIRD_PARTY_PRELOAD = ("numpy", "scipy.stats", "scipy.interpolate", "scipy.optimize", "scipy.signal",
                       "scipy.ndimage", "matplotlib", "matplotlib.pyplot", "pylab", "distutils.dir_util",
                       "numpy.f2py", "urllib.request", "erfa", "certifi")


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


def _casatools_library_imports(package_dir: Path) -> list[str]:
    """The submodules casatools' ``__init__`` imports before its first
    statement that does anything else (loading the compiled libraries, in
    its own order: ``image`` first defines symbols the others need)."""
    tree = ast.parse((package_dir / "__init__.py").read_text())
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            names.append(node.module)
        elif not isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign, ast.Expr)) or (
                isinstance(node, ast.Expr) and not isinstance(node.value, ast.Constant)):
            break
    return names


def preload(extra: tuple[str, ...] = ()) -> list[str]:
    """Import, in this process, everything slow that a unit child needs from
    CASA *except* casatools' initialisation: its compiled libraries (imported
    under a placeholder package so that ``casatools/__init__.py`` does not
    run), the third-party packages casatasks imports, then ``extra``
    modules. A later ``import casatools`` (in a forked child) runs the real
    ``__init__``, which finds the libraries loaded. Returns what could not be
    imported (each with its reason); raises if this would initialise CASA
    (casatools or casaconfig imported for real: a config read too early, gRPC
    threads in a process meant to fork)."""
    if _imported():
        raise RuntimeError("casatools is already imported; preload must run before it")
    failed: list[str] = []
    found = importlib.util.find_spec("casatools")
    if found is None or not found.submodule_search_locations:
        failed.append("casatools: not installed")
    else:
        package_dir = Path(list(found.submodule_search_locations)[0])
        placeholder = ModuleType("casatools")
        placeholder.__path__ = [str(package_dir)]  # type: ignore[attr-defined]
        sys.modules["casatools"] = placeholder
        try:
            for name in _casatools_library_imports(package_dir):
                importlib.import_module(f"casatools.{name}")
        except Exception as exc:  # noqa: BLE001 - the child imports it the ordinary way
            failed.append(f"casatools libraries: {type(exc).__name__}: {exc}")
        finally:
            del sys.modules["casatools"]
    for name in (*THIRD_PARTY_PRELOAD, *extra):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - optional: the child imports what it needs
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    initialised = _imported() | {m for m in ("casaconfig", "casaconfig.config") if m in sys.modules}
    if initialised:
        raise RuntimeError(f"preloading initialised CASA ({', '.join(sorted(initialised))} imported)")
    return failed


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
