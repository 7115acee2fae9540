"""Package names imported on first use.

``gptlab``, ``gptlab.gpt2``, ``gptlab.experiments`` and ``gptlab.experiments.figures`` export
many names; importing them all would start torch (and matplotlib, TensorFlow's readers, …) in
every workflow job, also in those that only download, combine tables or plot. Each name is
imported from its module when it is first used instead.
"""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]):
    """``(__getattr__, __dir__, __all__)`` for ``package``, whose names come from ``exports``.

    ``exports`` maps a module (relative to ``package``) to the names taken from it.
    """
    module_of = {name: module for module, names in exports.items() for name in names}
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str):
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value  # imported once
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(module_of))

    return __getattr__, __dir__, sorted(module_of)
