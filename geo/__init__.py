"""civicgrid's shared core: the store, coordinates, H3 cells, events, their aggregation and hotspot statistics."""

from __future__ import annotations

#: Names importable from the package itself, resolved on first use (so ``import geo.x`` stays light).
_LAZY = {"open_store": "geo.store", "Store": "geo.store"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    msg = f"module 'geo' has no attribute {name!r}"
    raise AttributeError(msg)
