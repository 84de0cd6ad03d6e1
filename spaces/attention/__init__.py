"""Attention variants, one file each, registered by name in `ATTENTION` on import.

Add a variant: write `spaces/attention/<name>.py` holding a subclass of `Attention` decorated
with `@ATTENTION.register("<name>")`. Every module of this package is imported below, so the
file is all it takes; the registry-driven tests then cover the new variant.
"""

import importlib
import pkgutil

from spaces.attention.base import ATTENTION, Attention, NoParams

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ATTENTION", "Attention", "NoParams"]
