"""What a done unit's outputs looked like, so a resume can tell a damaged product.

Why not a full hash of everything: a whole-program resume re-checks every
product of every done unit, and cubes are hundreds of MB. The check is what
catches the damage met in practice (truncation, a copy cut short, a file
replaced by another) at the cost of a few reads per product:

- a plain file: its size; a blake2b of the whole file when it is small
  (<= :data:`SMALL_FILE_BYTES`), else of its first and last
  :data:`SAMPLE_BYTES` (the FITS header and the end of the data) -- the
  "cheap content hash";
- a directory (a CASA image or table): one digest of the name and size of
  every file in it (``table.dat``, ``table.f0``, ``table.f0_TSM0``, the
  subtables'...; lock files left out, since readers touch them) and of the
  content of each small ``table.dat`` (the table's description), with the
  file count. Compact on purpose: a chunk's seven images hold ~80 files, and
  the done record of every unit is in the manifest every resume reads. No
  CASA import: rank 0 reads the table layer as plain files.

Records written before these checks existed carry no ``checks``; their
outputs are only checked for existence.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

SMALL_FILE_BYTES = 1 << 20
SAMPLE_BYTES = 1 << 16
_SKIP_NAMES = ("table.lock",)


def _hash_file(path: Path, size: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        if size <= SMALL_FILE_BYTES:
            h.update(fh.read())
        else:
            h.update(fh.read(SAMPLE_BYTES))
            fh.seek(size - SAMPLE_BYTES)
            h.update(fh.read(SAMPLE_BYTES))
    return h.hexdigest()


def _dir_entries(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            if name in _SKIP_NAMES or name.endswith(".lock"):
                continue
            full = os.path.join(root, name)
            out[os.path.relpath(full, path)] = os.stat(full).st_size
    return out


def _tree(path: Path) -> tuple[int, str]:
    """(file count, digest of names, sizes and small ``table.dat`` contents)."""
    files = _dir_entries(path)
    h = hashlib.blake2b(digest_size=16)
    for rel in sorted(files):
        h.update(f"{rel}\0{files[rel]}\n".encode())
        if os.path.basename(rel) == "table.dat" and files[rel] <= SMALL_FILE_BYTES:
            h.update(_hash_file(path / rel, files[rel]).encode())
    return len(files), h.hexdigest()


def fingerprint(path: str | os.PathLike) -> dict:
    """The check record of one output (``{"size", "hash"}`` for a file,
    ``{"files": count, "tree": digest}`` for a directory)."""
    p = Path(path)
    if p.is_dir():
        count, digest = _tree(p)
        return {"files": count, "tree": digest}
    size = p.stat().st_size
    return {"size": size, "hash": _hash_file(p, size)}


def fingerprints(paths: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for path in paths:
        try:
            out[path] = fingerprint(path)
        except OSError:
            continue  # a missing output is the child's own error to report
    return out


def mismatch(path: str | os.PathLike, expected: dict | None) -> str | None:
    """Why ``path`` no longer is what its done record says, or None if it is
    (``expected`` None: an old record, existence only)."""
    p = Path(path)
    if not os.path.lexists(p):
        return "missing"
    if not expected or not ("tree" in expected or "size" in expected):
        return None  # no checks recorded, or a kind this version does not know: existence only
    try:
        if "tree" in expected:
            if not p.is_dir():
                return "not a directory any more"
            count, digest = _tree(p)
            if count != expected.get("files"):
                return f"{count} table files, recorded {expected.get('files')}"
            if digest != expected["tree"]:
                return "table files changed (a size or a table.dat)"
            return None
        size = p.stat().st_size
        if size != expected.get("size"):
            return f"size {size} bytes, recorded {expected.get('size')}"
        if expected.get("hash") and _hash_file(p, size) != expected["hash"]:
            return "content changed"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return None


__all__ = ["fingerprint", "fingerprints", "mismatch", "SMALL_FILE_BYTES", "SAMPLE_BYTES"]
