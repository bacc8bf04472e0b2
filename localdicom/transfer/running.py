"""What pull and push share while they run: a stop asked for by Ctrl-C (taken by
:func:`localdicom.console.stopping_on_signals`), and whether an instance is known pulled
already."""

from __future__ import annotations

from localdicom.archive import Layout, sidecar
from localdicom.transfer.plan import Announced


class Stop:
    """Set by the first SIGINT or SIGTERM: no new instance is started."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def is_pulled(layout: Layout, instance: Announced, pulled: dict[str, str]) -> bool:
    """Whether the record says ``instance`` was pulled and the archive still holds it so."""
    digest = pulled.get(instance.sop)
    if digest is None:
        return False
    try:
        return sidecar.read(layout.instance_file(*instance.uids)).digest == digest
    except (OSError, ValueError, KeyError, TypeError):
        return False
