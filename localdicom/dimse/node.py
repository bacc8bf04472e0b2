"""What every DIMSE handler needs, and the way from a handler's thread to the Catalog.

pynetdicom runs each association in a thread of its own; the Catalog lives on the HTTP
server's event loop, so a handler hands each Catalog call to that loop and waits for it
(:class:`Bridge`). The loop never waits on the network: a slow sender holds its own thread,
and only the short calls (a commit, a search) run on the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from pynetdicom.events import Event

from localdicom.catalog import Catalog
from localdicom.settings import DicomPeer
from localdicom.workers import Workers

T = TypeVar("T")


class Bridge:
    """Runs coroutines on the server's event loop from a handler's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


@dataclass(frozen=True)
class Node:
    """The archive, the worker processes, the loop they live on, and who we are."""

    catalog: Catalog
    workers: Workers
    bridge: Bridge
    ae_title: str
    peers: dict[str, DicomPeer]


def caller(event: Event) -> str:
    """Who sent an event's request, for the log: AE title and address."""
    requestor = event.assoc.requestor
    return f"{requestor.ae_title}@{requestor.address}"
