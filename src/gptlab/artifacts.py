"""Writing tidy artifacts: CSV/JSON written atomically, with a metadata sidecar.

Every table the study writes gets ``<name>.meta.json`` beside it: the settings
that produced it, the seed, the models, the library versions and the machine
(CPU model and the instruction set torch uses, threads, math libraries), so a
report (or a reader years later) knows exactly where each number came from,
and which results may be compared bit for bit.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import pandas as pd

from .device import describe_machine
from .io import atomic_write, write_json

_PACKAGES = ("gptlab", "torch", "tiktoken", "numpy", "pandas")


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def sidecar_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".meta.json")


def write_table(df: pd.DataFrame, path, metadata: dict | None = None) -> Path:
    """Write ``df`` as CSV (no index) and its metadata sidecar, both atomically."""
    path = Path(path)
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    write_json(
        {
            "columns": list(df.columns),
            "rows": len(df),
            **(metadata or {}),
            "versions": library_versions(),
            "machine": describe_machine(),
        },
        sidecar_path(path),
    )
    return path


def concat_tables(paths, out, metadata: dict | None = None) -> Path:
    """Stack tables with the same columns (e.g. one per model) into ``out``, cell text unchanged.

    Cells are read as text, so numbers keep the exact digits their writer
    printed. The sidecar lists every part with its own metadata.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError(f"no tables to combine into {out}")
    frames = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths]
    for path, frame in zip(paths[1:], frames[1:], strict=True):
        if list(frame.columns) != list(frames[0].columns):
            raise ValueError(
                f"{path} has columns {list(frame.columns)}, {paths[0]} has {list(frames[0].columns)}; "
                "only tables of one kind can be combined"
            )
    parts = {}
    for path in paths:
        side = sidecar_path(path)
        parts[str(path)] = json.loads(side.read_text()) if side.is_file() else None
    return write_table(pd.concat(frames, ignore_index=True), out, {**(metadata or {}), "parts": parts})
