"""A small name -> object registry, in the spirit of fvcore's and timm's.

Registries replace if/elif chains: attention variants and tasks register themselves on
import, and tests parametrize over `registry.names()` so that adding one file adds its tests.
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def import_submodules(package: str, path: list[str], skip: tuple[str, ...] = ("base",)) -> None:
    """Import every module of a package (its `__name__` and `__path__`) except `skip`, so that
    the classes they register are in the registry: adding a file is all it takes."""
    for module in pkgutil.iter_modules(path):
        if module.name not in skip:
            importlib.import_module(f"{package}.{module.name}")


class Registry(Generic[T]):
    """Maps names to objects; refuses duplicates and explains unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@ATTENTION.register("window")`` (defaults to the object's ``name``)."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "name", None) or obj.__name__  # type: ignore[attr-defined]
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """The object registered as `name`; a ``module.path:Attr`` name is imported on demand."""
        if name in self._items:
            return self._items[name]
        if ":" in name:
            module, _, attr = name.partition(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise ValueError(
                    f"cannot import {self.kind} {name!r}: {exc}. "
                    f"Expected 'package.module:ClassName', e.g. 'mypkg.tasks:MyTask'"
                ) from exc
        raise ValueError(
            f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())} "
            f"(or an import path such as 'mypkg.module:Name')"
        )

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a glob pattern, sorted."""
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
