"""How each instance of a C-GET or C-MOVE goes out: the choice of transfer syntax, and the
stored file sent as it is.

The choice is pure (:func:`sendable_syntaxes`, :func:`choose_syntax`, :func:`move_contexts`):
an instance goes as stored when the peer accepted its stored syntax for its SOP class (the
bytes of the archive, unchanged), else in the first syntax it can be rewritten in that the
peer accepted, else not at all (a failed sub-operation, PS3.4 C.4.2.3 and C.4.3.3).

pynetdicom's Query/Retrieve SCP hands ``send_c_store`` only pydicom Datasets, although
``send_c_store`` can stream a file from disk without decoding it
(``_config.STORE_SEND_CHUNKED_DATASET``). An :class:`Outgoing` is a Dataset that names a
stored file; :func:`send_files_as_stored` makes an association's ``send_c_store`` send that
file (or fail, when there is none), the way pynetdicom itself swaps an association's methods
while a handler runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context

from localdicom.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from localdicom.dimse.selection import Match

#: Presentation contexts an association may propose: IDs are the odd numbers 1 to 255
#: (PS3.8 9.3.2.2).
MAX_CONTEXTS = 128
#: Proposed for every SOP class beside its stored syntaxes: every DICOM node accepts one
#: (PS3.5 10.1: Implicit VR Little Endian is the default transfer syntax).
FALLBACK_SYNTAXES = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)


class Unsendable(Exception):
    """An instance the peer accepted no transfer syntax for, or that could not be read."""


def sendable_syntaxes(contexts: Iterable[PresentationContext]) -> dict[str, list[str]]:
    """SOP class -> the transfer syntaxes this side may send it in: the accepted contexts in
    which it is the Storage SCU (for C-GET, those where the requestor took the SCP role by
    SCP/SCU Role Selection, PS3.7 D.3.3.4)."""
    syntaxes: dict[str, list[str]] = {}
    for context in contexts:
        if context.as_scu is True and context.transfer_syntax:
            syntaxes.setdefault(str(context.abstract_syntax), []).append(
                str(context.transfer_syntax[0])
            )
    return syntaxes


def choose_syntax(stored: str, accepted: Collection[str], targets: Sequence[str]) -> str | None:
    """``stored`` when the peer accepted it, else the first of ``targets`` (what the instance
    can be rewritten in, see ``instance_targets``) that it accepted, else None."""
    if stored in accepted:
        return stored
    return next((syntax for syntax in targets if syntax in accepted), None)


def move_contexts(matches: Iterable[Match]) -> list[PresentationContext]:
    """What a C-MOVE proposes to its destination: per SOP class, one context with Explicit and
    Implicit VR Little Endian, and one per stored syntax (so that each may be accepted on its
    own), at most :data:`MAX_CONTEXTS`, the fallbacks first."""
    classes: dict[str, dict[str, None]] = {}
    for match in matches:
        classes.setdefault(match.sop_class, {})[match.transfer_syntax] = None
    fallbacks = [build_context(sop_class, list(FALLBACK_SYNTAXES)) for sop_class in classes]
    stored = [
        build_context(sop_class, syntax)
        for sop_class, syntaxes in classes.items()
        for syntax in syntaxes
    ]
    return (fallbacks + stored)[:MAX_CONTEXTS]


class Outgoing(Dataset):
    """A stored instance to send as it is (``path``), or one that cannot be sent (``path``
    None, ``reason`` why). It holds the SOP Class and Instance UIDs, so that pynetdicom lists
    the instance in the Failed SOP Instance UID List when its sub-operation fails."""

    def __init__(self, match: Match, path: Path | None, reason: str = "") -> None:
        super().__init__()
        self.SOPClassUID = match.sop_class
        self.SOPInstanceUID = match.sop
        self.path = path  # not DICOM keywords: plain attributes, not elements
        self.reason = reason


def prefer_requestor_syntaxes(event: Event) -> None:
    """EVT_REQUESTED: before negotiation, order our transfer syntaxes as the requestor proposed
    them in the storage contexts where it will be the SCP (PS3.7 D.3.3.4)."""
    requestor = event.assoc.requestor
    receivers = {str(uid) for uid, role in requestor.role_selection.items() if role.scp_role}
    if receivers:
        acceptor = event.assoc.acceptor
        acceptor.supported_contexts = requestor_first(
            acceptor.supported_contexts, requestor.requested_contexts, receivers
        )


def requestor_first(
    supported: list[PresentationContext],
    proposed: list[PresentationContext],
    sop_classes: Collection[str],
) -> list[PresentationContext]:
    """``supported`` with, for each of ``sop_classes``, the transfer syntaxes proposed for it
    first, in the order proposed (across its contexts), then the others."""
    preferred: dict[str, dict[str, None]] = {}
    for context in proposed:
        if context.abstract_syntax in sop_classes:
            order = preferred.setdefault(str(context.abstract_syntax), {})
            order.update(dict.fromkeys(str(syntax) for syntax in context.transfer_syntax))
    result = []
    for context in supported:
        order = preferred.get(str(context.abstract_syntax), {})
        ours = [str(syntax) for syntax in context.transfer_syntax]
        if order:
            reordered = build_context(
                context.abstract_syntax,
                [s for s in order if s in ours] + [s for s in ours if s not in order],
            )
            reordered.scu_role, reordered.scp_role = context.scu_role, context.scp_role
            context = reordered
        result.append(context)
    return result


def send_files_as_stored(assoc: Association) -> None:
    """Make ``assoc.send_c_store`` send an :class:`Outgoing`'s file as it is (in chunks,
    never decoded), or fail its sub-operation; anything else is sent as before."""
    if getattr(assoc.send_c_store, "sends_outgoing", False):
        return
    assoc.send_c_store = _outgoing_sender(assoc.send_c_store)


def _outgoing_sender(send: Callable[..., Dataset]) -> Callable[..., Dataset]:
    @functools.wraps(send)
    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if isinstance(dataset, Outgoing):
            if dataset.path is None:
                raise Unsendable(f"{dataset.SOPInstanceUID}: {dataset.reason}")
            return send(dataset.path, *args, **kwargs)
        return send(dataset, *args, **kwargs)

    send_c_store.sends_outgoing = True  # type: ignore[attr-defined]
    return send_c_store
