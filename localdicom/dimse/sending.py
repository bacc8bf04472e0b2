"""How each instance of a C-GET or C-MOVE goes out: the choice of transfer syntax, and the
stored file sent as it is.

The choice is pure (:func:`sendable_syntaxes`, :func:`choose_syntax`, :func:`move_contexts`):
an instance goes as stored when the peer accepted its stored syntax for its SOP class (the
bytes of the archive, unchanged), else in the first syntax it can be rewritten in that the
peer accepted, else not at all (a failed sub-operation, PS3.4 C.4.2.3 and C.4.3.3).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Sequence

from pynetdicom.presentation import PresentationContext, build_context

from localdicom.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from localdicom.dimse.selection import Match

#: Presentation contexts an association may propose: IDs are the odd numbers 1 to 255
#: (PS3.8 9.3.2.2).
MAX_CONTEXTS = 128
#: Proposed for every SOP class beside its stored syntaxes: every DICOM node accepts one
#: (PS3.5 10.1: Implicit VR Little Endian is the default transfer syntax).
FALLBACK_SYNTAXES = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)


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


def requestor_first(
    supported: list[PresentationContext],
    proposed: list[PresentationContext],
    sop_classes: Collection[str],
) -> list[PresentationContext]:
    """``supported`` with, for each of ``sop_classes``, only the transfer syntaxes proposed
    for it that it supports, in the order proposed (across its contexts): the acceptor takes
    the first of its own syntaxes that the requestor proposed (pynetdicom's
    ``negotiate_as_acceptor``, PS3.8 9.3.3.2), so the requestor's order decides and the
    syntaxes it did not propose play no part."""
    preferred: dict[str, dict[str, None]] = {}
    for context in proposed:
        if context.abstract_syntax in sop_classes:
            order = preferred.setdefault(str(context.abstract_syntax), {})
            order.update(dict.fromkeys(str(syntax) for syntax in context.transfer_syntax))
    result = []
    for context in supported:
        order = preferred.get(str(context.abstract_syntax))
        if order:
            ours = {str(syntax) for syntax in context.transfer_syntax}
            syntaxes = tuple(syntax for syntax in order if syntax in ours)
            roles = (context.scu_role, context.scp_role)
            context = _reordered(str(context.abstract_syntax), syntaxes, roles)
        result.append(context)
    return result


@functools.lru_cache(maxsize=4096)
def _reordered(
    sop_class: str, syntaxes: tuple[str, ...], roles: tuple[bool | None, bool | None]
) -> PresentationContext:
    """A context of ``syntaxes`` in this order, made once: pynetdicom validates every UID
    of a context it builds (about 15 us each; a C-GET requestor proposes a hundred SOP
    classes), and a peer's next association proposes the same. Shared like the supported
    contexts, which negotiation only reads."""
    context = build_context(sop_class, list(syntaxes))
    context.scu_role, context.scp_role = roles
    return context
