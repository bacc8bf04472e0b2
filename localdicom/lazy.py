"""A package's names, imported from the module that defines them when first used (PEP 562).

A command imports the packages it uses, and a package used to import every module it gives
names out from: ``localdicom push`` imported pydicom, numpy and pynetdicom that it never
calls, 0.4 s of the 0.75 s before it sent anything. With these, a package costs only the
modules whose names are asked for. Not ``lazy_loader`` (SPEC 1): it names modules inside the
package only, and the catalog gives out names of the archive and the index too.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, list[str]]
) -> tuple[Callable[[str], Any], list[str]]:
    """A module ``__getattr__`` for ``package`` and its ``__all__``: ``exports`` maps a
    module's absolute name to the names the package gives out from it."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name]), name)

    return __getattr__, sorted(where)
