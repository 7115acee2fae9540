"""What the report notebooks share: showing text, tables and figures, and where each table came from.

The notebooks in ``workflow/notebooks`` import these helpers (papermill runs them
with the repository's ``src`` on ``PYTHONPATH``). Their code is hidden in the
rendered page (:func:`gptlab.study.reports.render_report`), so a reader sees
only what these functions display: text (:func:`say`), a notice set apart from
the text (:func:`notice`), tables with numbers formatted for people (:func:`show`),
figures (:func:`figure`), whether GPT-2 results come from OpenAI's weights
(:func:`weights_notice`) and the provenance of every table (:func:`provenance`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..experiments.common import CHECKPOINT, GPT2_RELEASE, read_table
from ..io import sidecar_path

__all__ = [
    "SYNTHETIC_NOTICE",
    "figure",
    "fmt",
    "decimals",
    "models_of",
    "notice",
    "number",
    "provenance",
    "read_json",
    "read_table",
    "say",
    "show",
    "sidecar",
    "weights_notice",
]

SHADE = "#e6f4e6"  # the green of cells that :func:`show` shades (the figures' "as expected")
SYNTHETIC_NOTICE = "Synthetic weights: these numbers are not the book's."
_NOT_OPENAI = "not OpenAI's weights: "  # how release_origin's evidence starts when they are not
# A model counts as GPT-2 when it was loaded from a converted release, or (made in memory) is named so.
_GPT2_NAME = re.compile(r"gpt-?2|(?<![0-9])(124M|355M|774M|1558M)\b", re.IGNORECASE)
_SHAPE = {
    "n_layers": "{:,} layers",
    "n_heads": "{:,} heads",
    "emb_dim": "{:,}-dimensional embeddings",
    "context_length": "a context of {:,} tokens",
}


def say(text: str) -> None:
    """Display ``text`` as Markdown."""
    from IPython.display import Markdown, display

    display(Markdown(text))


def notice(text: str) -> None:
    """Display ``text`` (Markdown) set apart from the page, as a boxed notice; nothing when it is empty."""
    if text:
        say("\n".join(f"> {line}" for line in text.splitlines()))


def _is_bool(series) -> bool:
    from pandas.api.types import is_bool_dtype

    values = series.dropna()
    return is_bool_dtype(series) or (len(values) > 0 and all(isinstance(v, bool) for v in values))


def show(df, formats: dict | None = None, wrap=(), shade=None, shade_columns=()) -> None:
    """Display ``df`` as a table without its index.

    ``formats`` maps columns to format strings (``"{:.3f}"``) or functions; columns
    of booleans read "yes"/"no"; missing values show as "–"; the columns in
    ``wrap`` keep their line breaks and share the width; cells of ``shade_columns`` for which
    ``shade(value)`` is true are shaded green.
    """
    from IPython.display import display

    formats = {c: (lambda v: "yes" if v else "no") for c in df.columns if _is_bool(df[c])} | (formats or {})
    style = df.style.hide(axis="index").format(formats, na_rep="–")
    if wrap:  # text columns share the width evenly, whatever the length of their texts
        text = {"white-space": "pre-wrap", "overflow-wrap": "anywhere", "text-align": "left"}
        text["width"] = f"{80 // len(wrap)}%"
        style = style.set_properties(subset=list(wrap), **text)
    if shade is not None:
        style = style.map(
            lambda v: f"background-color: {SHADE}" if shade(v) else "", subset=list(shade_columns)
        )
    display(style)


def figure(path, alt: str | None = None) -> None:
    """Display the PNG at ``path``, embedded in the page, described by ``alt`` (default: its file name)."""
    import base64
    import html

    from IPython.display import HTML, display

    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = html.escape(alt or Path(path).stem.replace("_", " "))
    display(HTML(f'<img src="data:image/png;base64,{data}" alt="{alt}" style="max-width: 100%">'))


def read_json(path) -> dict | None:
    """The JSON object at ``path``; ``None`` when ``path`` is empty (an artifact that was not made)."""
    return json.loads(Path(path).read_text(encoding="utf-8")) if path else None


def sidecar(path) -> dict | None:
    """The metadata written beside a table (``<name>.meta.json``), or ``None`` when there is none."""
    meta = sidecar_path(path)
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else None


# --------------------------------------------------------------------------- values for people


def decimals(places: int):
    """A formatter: a number with ``places`` decimals and a true minus sign ("−8.85"); "–" when missing."""

    def formatted(x) -> str:
        return "–" if x is None or x != x else f"{float(x):,.{places}f}".replace("-", "−")

    return formatted


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def number(x, digits: int = 3) -> str:
    """``x`` to ``digits`` significant digits for people: thousands separated, a true minus sign,
    ``2.97 × 10⁻³⁸`` (unbreakable) for magnitudes below 0.001 or from a million up; "–" when missing."""
    if x is None or x != x:
        return "–"
    x = float(x)
    if x != 0 and not 1e-3 <= abs(x) < 1e6:
        mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
        power = str(int(exponent)).translate(_SUPERSCRIPT)
        return f"{mantissa}\u00a0×\u00a010{power}".replace("-", "−", 1)  # no line break inside
    text = f"{x:,.{digits}g}" if abs(x) >= 10 ** (digits - 1) else f"{x:.{digits}g}"
    if "e" in text:  # :g switched to exponent notation for a round number such as 1e+03
        text = f"{x:,.0f}"
    return text.replace("-", "−")


def fmt(value) -> str:
    """A recorded value as text for people: yes/no, plain numbers, lists joined, ``key = value`` pairs."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 100_000 else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        items = (f"({fmt(v).replace('; ', ', ')})" if isinstance(v, dict) else fmt(v) for v in value)
        return ", ".join(items) if value else "none"
    if isinstance(value, dict):
        return "; ".join(f"{k} = {fmt(v)}" for k, v in value.items()) if value else "none"
    text = str(value)
    if "/" in text or re.fullmatch(r"[0-9a-f]{16,}", text):  # a path or a digest
        return f"`{text}`"
    if not text or re.search(r"\s", text):  # quoted, so that spaces (" pizza") show
        return json.dumps(text, ensure_ascii=False)
    return text


def _machine(m: dict) -> str:
    cpu = f"{m.get('cpu', 'unknown CPU')}, {m.get('cpu_count', '?')} cores"
    torch = f"torch {m.get('torch', '?')} ({m.get('torch_cpu_capability', '?')} kernels, "
    torch += f"{m.get('torch_threads', '?')} threads)"
    parts = [cpu, torch]
    if m.get("gpu"):
        parts.append(f"GPU {m['gpu']} (CUDA {m.get('cuda', '?')})")
    libraries = [lib for lib in m.get("math_libraries") or [] if "=" not in lib]
    if libraries:
        parts.append(
            "math libraries: " + "; ".join(re.sub(r"-Product Build.*", "", lib) for lib in libraries)
        )
    return ", ".join(parts)


def _origin(info: dict) -> str:
    origin = info.get("origin")
    return origin["evidence"] if origin else "origin not recorded"


def _model_line(name: str, info: dict) -> str:
    cfg = info.get("config") or {}
    shape = ", ".join(template.format(cfg[k]) for k, template in _SHAPE.items() if k in cfg)
    size = f"{info['parameters']:,} parameters" if info.get("parameters") else ""
    described = "; ".join(x for x in (size, shape) if x)
    return f"  - `{name}`: " + "; ".join(x for x in (described, _origin(info)) if x)


# --------------------------------------------------------------------------- sidecars


def _parts(meta: dict) -> list[dict]:
    return [p or {} for p in (meta.get("parts") or {}).values()]


def _join(values: list) -> object:
    """One value when the parts agree, else each different value once."""
    unique = list({json.dumps(v, sort_keys=True, default=str): v for v in values}.values())
    return unique[0] if len(unique) == 1 else unique


def _join_models(*described) -> dict:
    models: dict = {}
    for d in described:
        for name, info in (d or {}).items():
            models.setdefault(name, {}).update(info)
    return models


def _merged(meta: dict) -> dict:
    """A stacked table's sidecar with what its parts recorded: shared values once, models and paths joined.

    The stacked table's own ``columns``, ``rows`` and ``experiment`` win; its ``models`` add to the parts'.
    """
    parts = _parts(meta)
    if not parts:
        return meta
    merged: dict = {}
    for key in dict.fromkeys(k for p in parts for k in p if k not in ("columns", "rows")):
        values = [p[key] for p in parts if key in p]
        if key == "models":
            merged[key] = _join_models(*values)
        elif key == "model_paths":
            merged[key] = {k: v for d in values for k, v in d.items()}
        else:
            merged["model_files" if key == "model" and len(values) > 1 else key] = _join(values)
    own = {k: v for k, v in meta.items() if k not in merged and k != "parts"}
    models = _join_models(merged.get("models"), meta.get("models"))
    return {
        **own,
        **merged,
        "models": models,
        "experiment": meta.get("experiment") or merged.get("experiment"),
    }


def models_of(*tables) -> dict:
    """The models the sidecars of ``tables`` describe (stacked tables: their parts' too), by name."""
    metas = [(sidecar(table) if table else None) or {} for table in tables]
    return _join_models(*(part.get("models") for meta in metas for part in [*_parts(meta), meta]))


def _is_gpt2(name: str, info: dict) -> bool:
    source = (info.get("origin") or {}).get("source")
    if source in (GPT2_RELEASE, CHECKPOINT):
        return source == GPT2_RELEASE
    return bool(_GPT2_NAME.search(name))


def weights_notice(*tables, names=()) -> str:
    """Markdown for the top of a report when its GPT-2 models are not, or may not be, OpenAI's weights.

    Models come from the sidecars of ``tables`` (:func:`models_of`) and from ``names`` (the models the
    tables hold, described or not); a model is GPT-2 when it was loaded from a converted release or,
    made in memory or not described, is named after GPT-2. Empty when every GPT-2 model has OpenAI's
    shape and size (:func:`gptlab.gpt2.release_origin`) or there is none.
    """
    described = {str(name): {} for name in names} | models_of(*tables)
    gpt2 = {n: i.get("origin") or {} for n, i in described.items() if _is_gpt2(n, i)}
    synthetic = {n: o for n, o in gpt2.items() if o.get("matches_openai") is False}
    unknown = [n for n, o in gpt2.items() if o.get("matches_openai") is None]
    lines = []
    if synthetic:
        by_evidence: dict = {}
        for name, origin in synthetic.items():
            by_evidence.setdefault(origin["evidence"].removeprefix(_NOT_OPENAI), []).append(f"`{name}`")
        why = "; ".join(f"{', '.join(names)}: {evidence}" for evidence, names in by_evidence.items())
        lines.append(
            f"**{SYNTHETIC_NOTICE}** The GPT-2 weights here are not OpenAI's release ({why}). "
            "They test the pipeline; only OpenAI's weights can give the book's results."
        )
    if unknown:
        names = ", ".join(f"`{n}`" for n in unknown)
        lines.append(
            f"Where the GPT-2 weights of {names} came from is not recorded: the numbers are the book's "
            "only if they are OpenAI's."
        )
    return "\n\n".join(lines)


_SPECIAL = {"columns", "rows", "experiment", "parts", "versions", "machine", "models"}
_LABELS = {
    "seed": "seed",
    "seeds": "seeds",
    "config": "settings",
    "data": "data settings",
    "model_config": "model settings",
    "train_config": "training settings",
    "model_paths": "model files",
    "model_path": "model file",
    "model": "model file",
    "model_files": "model files",
}


def _setting_lines(label: str, value) -> list[str]:
    if isinstance(value, dict) and value:
        return [f"- {label}:", *(f"  - `{k}` = {fmt(v)}" for k, v in value.items())]
    return [f"- {label}: {fmt(value)}"]


def _meta_lines(meta: dict) -> list[str]:
    lines = []
    for key, value in meta.items():
        if key not in _SPECIAL:
            lines += _setting_lines(_LABELS.get(key, key.replace("_", " ")), value)
    models = meta.get("models") or {}
    if models:
        lines += ["- models:", *(_model_line(name, info) for name, info in models.items())]
    machines = meta.get("machine")
    for m in machines if isinstance(machines, list) else [machines] if machines else []:
        lines.append(f"- machine: {_machine(m)}")
    if meta.get("versions"):
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    return lines


def _count(n, word: str) -> str:
    return f"{fmt(n)} {word}" + ("" if n == 1 else "s")


def _part_name(part, table) -> str:
    """A part of a stacked table named from the stacked table's folder (``models/trained.csv``)."""
    try:
        return f"`{Path(part).resolve().relative_to(Path(table).resolve().parent)}`"
    except ValueError:
        return f"`{part}`"


def _describe(path, meta: dict | None) -> str:
    name = Path(path).name
    if meta is None:
        return f"**`{name}`**: no `{sidecar_path(path).name}` beside it."
    parts = list(meta.get("parts") or {})
    merged = _merged(meta)
    experiment = f"{merged['experiment']}; " if merged.get("experiment") else ""
    head = f"**`{name}`**: {experiment}{_count(meta.get('rows'), 'row')}"
    if parts:
        named = ", ".join(_part_name(p, path) for p in parts)
        head += f", stacked from {_count(len(parts), 'table')} ({named})"
    return "\n".join([head + ".", "", *_meta_lines(merged)])


def _recorded(meta: dict) -> str:
    """What a sidecar says about how its table was made (not its shape), to spot tables of one run."""
    merged = _merged(meta)
    return json.dumps({k: v for k, v in merged.items() if k not in ("columns", "rows")}, sort_keys=True)


def provenance(*paths) -> str:
    """Markdown describing each table's sidecar: experiment, seeds, settings, models, machine, versions.

    Settings are ``key = value`` lists; a stacked table (``gptlab.io.concat_tables``) is described
    with what its parts recorded; a table whose sidecar records the same as an earlier one's (tables
    of one run) is named with a reference to it; a table without a sidecar is named as such.
    Tables are separated by a blank line.
    """
    blocks, seen = [], {}
    for path in paths:
        meta = sidecar(path)
        key = _recorded(meta) if meta is not None else None
        if key is not None and key in seen:
            blocks.append(
                f"**`{Path(path).name}`**: {_count(meta.get('rows'), 'row')}, made by the same run as "
                f"`{seen[key]}` (its sidecar records the same)."
            )
            continue
        if key is not None:
            seen[key] = Path(path).name
        blocks.append(_describe(path, meta))
    return "\n\n".join(blocks)
