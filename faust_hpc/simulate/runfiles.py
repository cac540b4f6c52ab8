"""Variants of the demo run file, for tests and benchmarks.

``write_runfile_variant(sim, path, imaging={"arrays": ["12m"]})`` reads the
simulation's ``demo.toml``, deep-merges the overrides table by table, points
``data_dir`` at the simulated data (absolute) and ``product_dir`` at
``path``'s folder unless overridden, and writes a TOML file. A value of
``None`` removes a key. Only the value types of the run-file schema are
supported by :func:`dumps_toml` (str, bool, int, float, lists, tables).
"""
from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Any, Mapping

from faust_hpc.simulate.core import SimResult


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"cannot write {value} to a run file")
        return repr(value)
    if isinstance(value, (str, os.PathLike)):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"unsupported run-file value {value!r}")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _value(key)


def dumps_toml(document: Mapping[str, Any]) -> str:
    """Top-level tables ([run], [imaging], [scheduler]) and ``[spw."LABEL"]`` sub-tables."""
    lines: list[str] = []
    for table, content in document.items():
        if table == "spw":
            for label, overrides in content.items():
                lines.append(f'[spw.{_value(label)}]')
                lines += [f"{_key(k)} = {_value(v)}" for k, v in overrides.items()]
                lines.append("")
            continue
        lines.append(f"[{table}]")
        lines += [f"{_key(k)} = {_value(v)}" for k, v in content.items()]
        lines.append("")
    return "\n".join(lines)


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), dict) and key != "automask":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _drop_unselected_spw_tables(document: dict[str, Any]) -> None:
    """A variant that narrows ``[imaging] spws`` keeps only the ``[spw."LABEL"]``
    tables of the SPWs it still images (the validator refuses the others)."""
    selected = document.get("imaging", {}).get("spws")
    if isinstance(selected, str) and selected not in ("all", "lines"):
        selected = [selected]
    if isinstance(selected, list) and isinstance(document.get("spw"), dict):
        document["spw"] = {label: table for label, table in document["spw"].items() if label in selected}
        if not document["spw"]:
            del document["spw"]


def write_runfile_variant(sim: SimResult, path: str | os.PathLike, **tables: Mapping[str, Any]) -> Path:
    path = Path(path)
    document = tomllib.loads(sim.runfile.read_text())
    document["run"]["data_dir"] = str(sim.data_dir)
    document["run"]["product_dir"] = str(path.parent / "products")
    document = _merge(document, tables)
    _drop_unselected_spw_tables(document)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(dumps_toml(document))
    tmp.replace(path)
    return path
