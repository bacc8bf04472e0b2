"""The tutorial's three sample instances, bundled with the package (``serve --samples``).

A wheel carries them as ``localdicom/sample_dcms``; a source checkout has them at the top of
the repository, where ``sample_dcms/generate.py`` writes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from localdicom.catalog import Catalog, Stored

_PACKAGE = Path(__file__).resolve().parent
_LOCATIONS = (_PACKAGE / "sample_dcms", _PACKAGE.parent / "sample_dcms")


def sample_files() -> list[Path]:
    for folder in _LOCATIONS:
        files = sorted(folder.glob("*.dcm"))
        if files:
            return files
    raise FileNotFoundError("the bundled sample instances are missing; run sample_dcms/generate.py")


async def store_samples(catalog: Catalog) -> list[Stored]:
    """Store each sample through the same path STOW uses; already stored ones are kept."""
    return [await catalog.store(_chunks(path)) for path in sample_files()]


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fp:
        while chunk := fp.read(1 << 20):
            yield chunk
