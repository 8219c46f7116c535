"""Package attributes imported on first use (PEP 562), so a package's TensorFlow-free modules
(config sections) load without TensorFlow while ``from tfsoft.losses import InBatchSoftmax``
keeps working."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]], namespace: dict):
    """A module ``__getattr__`` that imports ``package.<module>`` when one of its names is asked for.

    Args:
        package: the package's ``__name__``.
        exports: submodule -> the names it exports.
        namespace: the package's ``globals()`` (an imported name is cached there).
    Returns:
        ``(__getattr__, __all__)`` for the package.
    """
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module '{package}' has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    return __getattr__, sorted(module_of)
