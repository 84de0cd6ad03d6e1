"""Attention variants, one file each, registered by name in `ATTENTION` on import.

Add a variant: write `spaces/attention/<name>.py` holding a subclass of `Attention` decorated
with `@ATTENTION.register()` and a `name`. Every module of this package is imported below, so
the file is all it takes; the registry-driven tests then cover the new variant.
"""

from spaces.attention.base import ATTENTION, Attention, NoParams
from spaces.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["ATTENTION", "Attention", "NoParams"]
