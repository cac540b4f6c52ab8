"""File plumbing for CASA images: open safely, remove, publish atomically.

CASA images are directories (tables). Two rules keep a crash from leaving a
product that looks finished:

1. every stage writes under a temporary name next to the final one
   (:func:`temp_name`, same directory so the rename is atomic), and
2. :func:`publish` replaces the old product by the new one with a rename,
   removing the old one first (a re-run replaces its products cleanly).

Temporary names start with ``.tmp-`` so globs for products (``<base>*``) and
the finished-looking names never match them; :func:`remove_stale_temporaries`
clears the leftovers of a crashed attempt.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from glob import glob
from pathlib import Path
from typing import Iterable, Iterator

from faust_hpc import casa_env
from faust_hpc.layout import CHUNK_LIST_SUFFIX

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
# Files named like a product's extension that a re-run of tclean must not
# delete: the frozen chunk list belongs to the prepare stage.
PRESERVED_ON_REPUBLISH = (CHUNK_LIST_SUFFIX,)

# Extensions tclean can write for one imagename (the original's list).
TCLEAN_EXTS = (
    ".flux", ".pb", ".image", ".alpha", ".alpha.error", ".weight", ".model", ".pbcor", ".psf",
    ".sumwt", ".residual", ".flux.pbcoverage", ".mask", ".image.pbcor", ".workdirectory",
)


def tools():
    """casatools, configured offline by :mod:`faust_hpc.casa_env`."""
    return casa_env.casatools()


def tasks():
    return casa_env.casatasks()


def log_post(msg: str, priority: str = "INFO") -> None:
    """Post a message to the Python log and the CASA log of this process.

    In interactive use (no logging handler configured, as at a Python prompt)
    an INFO message is also printed, so it shows on the console as the
    original's did (warnings get there through logging's last-resort handler).
    Both go to stderr, like every log, so a script's own stdout stays its own;
    the commands and unit children configure logging and print nothing twice."""
    level = {"INFO": logging.INFO, "WARN": logging.WARNING, "SEVERE": logging.ERROR}.get(priority, logging.INFO)
    log.log(level, msg)
    if level < logging.WARNING and not log.hasHandlers():   # warnings: logging's last resort prints them
        print(msg, file=sys.stderr, flush=True)
    if "casatasks" not in sys.modules:  # never import CASA just to log
        return
    try:
        sys.modules["casatasks"].casalog.post(msg, priority, "faust_hpc")
    except Exception:  # logging must never break a stage
        pass


class ImageManager:
    """Open a CASA image with the image tool and always close it.

    >>> with ImageManager('foo.image') as tool:
    ...     shape = tool.shape()
    """

    def __init__(self, infile: str | os.PathLike, cache: bool = True):
        self.infile = str(infile)
        self.cache = cache
        self.tool = None

    def __enter__(self):
        if not os.path.exists(self.infile):
            raise FileNotFoundError(f"CASA image not found: {self.infile}")
        self.tool = tools().image()
        self.tool.open(self.infile, cache=self.cache)
        return self.tool

    def __exit__(self, *exc) -> None:
        if self.tool is not None:
            self.tool.close()
            self.tool.done()
            self.tool = None


def temp_name(final: str | os.PathLike, tag: str = "") -> str:
    """Temporary sibling of ``final`` (same directory, hidden, pid-unique)."""
    final = Path(final)
    suffix = f"-{tag}" if tag else ""
    return str(final.parent / f"{TEMP_PREFIX}{os.getpid()}{suffix}-{final.name}")


def _is_casa_table(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "table.dat"))


def safely_remove_file(filen: str | os.PathLike) -> None:
    """Remove a file or CASA image; tables go through ``rmtables`` first so
    CASA's table cache in this process forgets them."""
    filen = str(filen)
    if not os.path.lexists(filen):
        return
    if os.path.isdir(filen) and not os.path.islink(filen):
        if _is_casa_table(filen):
            try:
                tasks().rmtables(filen)
            except Exception as exc:  # fall back to a hard delete below
                log.debug("rmtables(%s) failed: %s", filen, exc)
        shutil.rmtree(filen, ignore_errors=True)
    else:
        os.remove(filen)


def if_exists_remove(filen: str | os.PathLike) -> None:
    if os.path.lexists(str(filen)):
        safely_remove_file(filen)


def check_delete_image_files(imagename: str, parallel: bool = False, preserve_mask: bool = False) -> None:
    """Remove tclean's products for ``imagename`` (optionally keeping ``.mask``)."""
    for ext in TCLEAN_EXTS:
        if preserve_mask and ext == ".mask":
            continue
        if_exists_remove(imagename + ext)


def delete_all_extensions(imagename: str, keep_exts: Iterable[str] | None = None) -> None:
    """Remove every ``<imagename>.*`` except names ending in ``keep_exts``."""
    keep = tuple(keep_exts or ())
    for filen in sorted(glob(glob_escape(imagename) + ".*")):
        if keep and any(filen.endswith(ext) for ext in keep):
            continue
        safely_remove_file(filen)


def delete_workdir(imagename: str) -> None:
    if_exists_remove(f"{imagename}.workdirectory")


def concat_parallel_image(imagename: str) -> None:
    """Documented API. The original joined the per-process pieces of an image
    that mpicasa's ``parallel=True`` tclean wrote (``name.image/name.n1.image``).
    tclean runs serially here (parallelism is one process per unit), so there is
    never such a piece; as the original did for a serial image, say so and pass."""
    ext = os.path.splitext(imagename)[1].lstrip(".")
    if not glob(os.path.join(glob_escape(imagename), f"*.{ext}")):
        log_post(":: Not a parallel image! Passing.")
        return
    raise RuntimeError(f"{imagename} holds per-process pieces of an mpicasa image; join them with CASA's "
                       f"ia.imageconcat (faust_hpc never writes such images)")


def concat_parallel_all_extensions(imagebase: str) -> None:
    """Documented API: :func:`concat_parallel_image` for every tclean product of ``imagebase``."""
    for ext in ("image", "mask", "model", "pb", "psf", "residual", "sumwt", "weight"):
        if os.path.exists(f"{imagebase}.{ext}"):
            concat_parallel_image(f"{imagebase}.{ext}")


def glob_escape(path: str) -> str:
    """Escape glob metacharacters (field/labels may contain ``[`` in principle)."""
    import glob as _glob

    return _glob.escape(path)


def replace_existing_file_with_new(old_filen: str, new_filen: str) -> None:
    """Replace ``old_filen`` by ``new_filen`` (removed first, then a rename)."""
    if not os.path.exists(new_filen):
        raise FileNotFoundError(f'file does not exist: "{new_filen}"')
    if_exists_remove(old_filen)
    os.rename(new_filen, old_filen)


def publish(tmp: str, final: str) -> str:
    """Move a finished temporary product into place (the only way products
    appear under their final names)."""
    replace_existing_file_with_new(final, tmp)
    return final


def publish_tclean_products(tmp_base: str, final_base: str, keep: Iterable[str] | None = None,
                            last: str = ".image") -> list[str]:
    """Rename every ``<tmp_base>.<ext>`` to ``<final_base>.<ext>``.

    Old products of ``final_base`` that the new run did not write are removed
    first, so a re-run never mixes generations. Extensions not in ``keep``
    (when given) are deleted instead of published. ``last`` is renamed last:
    it is the product later stages look for, so it appears only when the
    rest is in place.
    """
    produced = sorted(glob(glob_escape(tmp_base) + ".*"))
    exts = [p[len(tmp_base):] for p in produced]
    keep_set = None if keep is None else set(keep)
    delete_all_extensions(final_base, keep_exts=PRESERVED_ON_REPUBLISH)
    published: list[str] = []
    ordered = sorted(exts, key=lambda e: (e == last, e))
    for ext in ordered:
        src = tmp_base + ext
        if ext == ".workdirectory" or (keep_set is not None and ext not in keep_set):
            safely_remove_file(src)
            continue
        os.rename(src, final_base + ext)
        published.append(final_base + ext)
    return published


def remove_stale_temporaries(directory: str | os.PathLike, stem: str) -> None:
    """Remove ``.tmp-*`` leftovers of crashed attempts for products named ``stem*``."""
    for filen in glob(os.path.join(glob_escape(str(directory)), f"{TEMP_PREFIX}*-{glob_escape(stem)}*")):
        safely_remove_file(filen)


def remove_end_from_pathname(filen: str, end: str = ".image") -> str:
    """``foo.image`` -> ``foo`` (error if it does not end that way)."""
    if not filen.endswith(end):
        raise ValueError(f'path "{filen}" does not end with "{end}"')
    return filen[: -len(end)]


def copy_image(src: str, dst: str) -> None:
    """Copy a CASA image directory (replacing ``dst``)."""
    if_exists_remove(dst)
    shutil.copytree(src, dst, symlinks=True)


@contextlib.contextmanager
def in_workdir(path: str | os.PathLike) -> Iterator[Path]:
    """Run CASA with ``path`` as the working directory: tclean and friends
    drop temporary files (TempLattice*, *.workdirectory, ...) in the current
    directory, and concurrent stages must not share one."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(previous)
