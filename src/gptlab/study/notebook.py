"""What the report notebooks share: showing text, tables and figures, and where each table came from.

The notebooks in ``workflow/notebooks`` import these helpers (papermill runs them
with the repository's ``src`` on ``PYTHONPATH``). Their code is hidden in the
rendered page (:func:`gptlab.study.reports.render_report`), so a reader sees
only what these functions display: text (:func:`say`), tables with numbers
formatted for people (:func:`show`), figures (:func:`figure`) and the
provenance of every table (:func:`provenance`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..experiments.common import read_table
from ..io import sidecar_path

__all__ = ["figure", "provenance", "read_json", "read_table", "say", "show", "sidecar"]

# Sidecar keys shown by their own lines in :func:`provenance` (or not at all).
_KNOWN = {"columns", "rows", "experiment", "seed", "seeds", "config", "models", "versions"}
_SHAPE = ("n_layers", "n_heads", "emb_dim", "context_length")
SHADE = "#e6f4e6"  # the green of cells that :func:`show` shades (the figures' "as expected")


def say(text: str) -> None:
    """Display ``text`` as Markdown."""
    from IPython.display import Markdown, display

    display(Markdown(text))


def show(df, formats: dict | None = None, wrap=(), shade=None, shade_columns=()) -> None:
    """Display ``df`` as a table without its index.

    ``formats`` maps columns to format strings (``"{:.3f}"``); missing values
    show as "–"; the columns in ``wrap`` keep their line breaks; cells of
    ``shade_columns`` for which ``shade(value)`` is true are shaded green.
    """
    from IPython.display import display

    style = df.style.hide(axis="index").format(formats or {}, na_rep="–")
    if wrap:
        style = style.set_properties(subset=list(wrap), **{"white-space": "pre-wrap", "text-align": "left"})
    if shade is not None:
        style = style.map(
            lambda v: f"background-color: {SHADE}" if shade(v) else "", subset=list(shade_columns)
        )
    display(style)


def figure(path) -> None:
    """Display the image at ``path`` (embedded in the rendered page)."""
    from IPython.display import Image, display

    display(Image(filename=str(path)))


def read_json(path) -> dict | None:
    """The JSON object at ``path``; ``None`` when ``path`` is empty (an artifact that was not made)."""
    return json.loads(Path(path).read_text(encoding="utf-8")) if path else None


def sidecar(path) -> dict | None:
    """The metadata written beside a table (``<name>.meta.json``), or ``None`` when there is none."""
    meta = sidecar_path(path)
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else None


def _value(value) -> str:
    return f"`{json.dumps(value, default=str)}`"


def _model_line(name: str, info: dict) -> str:
    cfg = info.get("config") or {}
    shape = ", ".join(f"{k}={cfg[k]}" for k in _SHAPE if k in cfg)
    return f"- model `{name}`: {info.get('parameters', 0):,} parameters ({shape})"


def _part_line(part: str, meta: dict | None) -> str:
    """A table stacked from several: one line per part, from the part's own sidecar."""
    meta = meta or {}
    names = ", ".join(f"`{m}`" for m in meta.get("models") or {})
    line = f"- part `{Path(part).name}`: {meta.get('experiment', 'no sidecar')}"
    return f"{line} ({names})" if names else line


def _meta_lines(meta: dict) -> list[str]:
    seeds = meta.get("seeds", meta.get("seed"))
    lines = [] if seeds is None else [f"- seed{'s' if isinstance(seeds, list) else ''}: `{seeds}`"]
    lines += [f"- {key}: {_value(value)}" for key, value in (meta.get("config") or {}).items()]
    lines += [_model_line(name, info) for name, info in (meta.get("models") or {}).items()]
    for key, value in meta.items():
        if key == "parts" and isinstance(value, dict):
            lines += [_part_line(part, part_meta) for part, part_meta in value.items()]
        elif key not in _KNOWN:
            lines.append(f"- {key}: {_value(value)}")
    versions = meta.get("versions") or {}
    if versions:
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return lines


def _describe(path) -> str:
    meta, name = sidecar(path), Path(path).name
    if meta is None:
        return f"**`{name}`**: no `{sidecar_path(path).name}` beside it."
    experiment = f": {meta['experiment']}" if meta.get("experiment") else ""
    return "\n".join([f"**`{name}`** ({meta.get('rows', '?')} rows){experiment}", "", *_meta_lines(meta)])


def provenance(*paths) -> str:
    """Markdown describing each table's sidecar: experiment, seeds, settings, models, versions, machine.

    Tables are separated by a blank line; a table without a sidecar is named as such.
    """
    return "\n\n".join(_describe(path) for path in paths)
