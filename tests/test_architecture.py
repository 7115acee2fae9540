"""The package's shape: imports run one way, from the core up to the command line, with no cycle.

Layers, lowest first (a module may import its own layer and the layers below):

1. core: model, tokenizer, data, losses, generation, fast, io, download, device, lazy, corpus
2. gpt2 (OpenAI's weights) and training (loop, checkpoints, pretrain, the book's run), which
   do not import each other
3. experiments (the exercises' measurements and figures)
4. study (the pipeline's steps and reports)
5. cli, testing

The top-level names kept for existing imports (checkpoint, pretrain, pretrained, book, convert)
only re-export; nothing inside the package imports them. Every import counts, also those inside
functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "src" / "gptlab"
CORE = {
    "model",
    "tokenizer",
    "data",
    "losses",
    "generation",
    "fast",
    "io",
    "download",
    "device",
    "lazy",
    "corpus",
}
LAYERS = {**dict.fromkeys(CORE, 1), "gpt2": 2, "training": 2, "experiments": 3, "study": 4, "cli": 5}
LAYERS["testing"] = 5
SHIMS = {"checkpoint", "pretrain", "pretrained", "book", "convert"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The gptlab modules that ``path`` imports (absolute or relative, at any depth)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "gptlab"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "gptlab":
                continue
            found.add(target)
            # `from . import x` / `from .gpt2 import tf` may name submodules
            found |= {f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")}
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return {m for m in found if _is_module(m)} - {name} - ancestors  # a module's package is not an edge


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_run_from_the_core_up():
    wrong = []
    for module, targets in graph().items():
        mine = top(module)
        if mine in SHIMS or module == "gptlab":
            continue
        assert mine in LAYERS, f"{module} belongs to no layer; add it to LAYERS in this test"
        for target in targets:
            theirs = top(target)
            if theirs in SHIMS:
                wrong.append(f"{module} imports the re-export {target}; import the module itself")
            elif LAYERS.get(theirs, 0) > LAYERS[mine]:
                wrong.append(f"{module} (layer {LAYERS[mine]}) imports {target} (layer {LAYERS[theirs]})")
            elif {mine, theirs} == {"gpt2", "training"}:
                wrong.append(f"{module} imports {target}: gpt2 and training are independent")
    assert not wrong, "\n".join(wrong)


def test_the_old_module_names_still_import():
    import importlib

    for name in sorted(SHIMS):
        module = importlib.import_module(f"gptlab.{name}")
        assert module.__doc__ and "keeps" in module.__doc__, name
