"""C-GET and C-MOVE SCP: the instances an identifier names, sent by C-STORE sub-operations.

C-GET sends them back on the requestor's own association, in the storage contexts it
accepted with the SCP role (PS3.4 C.4.3); C-MOVE opens an association to the destination named
by its AE title among the ``--dicom-peer`` nodes (PS3.4 C.4.2). pynetdicom runs the
sub-operations and builds the responses from what these generators yield: the number of
sub-operations, then one (Pending, instance) per instance; it counts each C-STORE response as
completed, warning or failed and lists the failed SOP Instance UIDs in the final response
(Success, Warning B000, or Failure A702 when every one failed).

Each instance goes as stored when its syntax was accepted (the archive's bytes, streamed),
else transcoded in the worker processes to a syntax the peer accepted, else its
sub-operation fails (:mod:`.sending`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification

from localdicom.dicom.pixels import transcode
from localdicom.dicom.syntaxes import instance_targets
from localdicom.dimse.node import Node, caller
from localdicom.dimse.selection import IdentifierError, Match, retrieve_keys, select
from localdicom.dimse.sending import (
    Outgoing,
    choose_syntax,
    move_contexts,
    send_files_as_stored,
    sendable_syntaxes,
)
from localdicom.dimse.store import ERROR_COMMENT_LENGTH, status

logger = logging.getLogger(__name__)

#: PS3.4 Tables C.4-2 (C-MOVE) and C.4-3 (C-GET): sub-operations continuing; cancelled.
PENDING, CANCELLED = 0xFF00, 0xFE00
#: PS3.4 Tables C.4-2 and C.4-3: Identifier does not match SOP Class.
IDENTIFIER_DOES_NOT_MATCH = 0xA900


def handle_get(event: Event, node: Node) -> Iterator[Any]:
    """EVT_C_GET: the number of sub-operations, then each instance to send back."""
    try:
        keys = retrieve_keys(event.identifier, event.request.AffectedSOPClassUID)
    except IdentifierError as error:
        yield from _refused(event, error)
        return
    matches = node.bridge.run(select(node.catalog, keys))
    logger.info("C-GET from %s: %d instances", caller(event), len(matches))
    send_files_as_stored(event.assoc)
    yield len(matches)
    yield from _sub_operations(event, node, matches, event.assoc)


def handle_move(event: Event, node: Node) -> Iterator[Any]:
    """EVT_C_MOVE: the destination (or None, None: A801 Move Destination unknown), the number
    of sub-operations, then each instance to send there."""
    peer = node.peers.get((event.move_destination or "").strip())
    if peer is None:
        logger.warning("C-MOVE from %s to unknown %r", caller(event), event.move_destination)
        yield None, None
        return
    try:
        keys = retrieve_keys(event.identifier, event.request.AffectedSOPClassUID)
    except IdentifierError as error:
        # pynetdicom asks for the destination first; the refusal follows the count
        yield peer.host, peer.port, {"contexts": [build_context(Verification)]}
        yield from _refused(event, error)
        return
    matches = node.bridge.run(select(node.catalog, keys))
    logger.info(
        "C-MOVE from %s to %s@%s:%d: %d instances",
        *(caller(event), peer.ae_title, peer.host, peer.port, len(matches)),
    )
    destination: list[Association] = []
    # the handler runs in associate()'s thread before it returns: in time for every send
    ready = (evt.EVT_ESTABLISHED, _destination_ready, [destination])
    yield peer.host, peer.port, {"contexts": move_contexts(matches), "evt_handlers": [ready]}
    yield len(matches)
    yield from _sub_operations(event, node, matches, destination[0])


def _destination_ready(event: Event, destination: list[Association]) -> None:
    send_files_as_stored(event.assoc)
    destination.append(event.assoc)


def _refused(event: Event, error: IdentifierError) -> Iterator[Any]:
    """A900 with the reason. pynetdicom answers a failure only in place of a sub-operation,
    so one is announced (and counted failed in the response)."""
    logger.warning("retrieve from %s refused: %s", caller(event), error)
    answer = status(IDENTIFIER_DOES_NOT_MATCH)
    answer.ErrorComment = str(error)[:ERROR_COMMENT_LENGTH]
    yield 1
    yield answer, None


def _sub_operations(
    event: Event, node: Node, matches: list[Match], assoc: Association
) -> Iterator[tuple[int, Dataset | None]]:
    """(Pending, what to send) per instance, until a C-CANCEL (PS3.4 C.4.2.3, C.4.3.3)."""
    accepted = sendable_syntaxes(assoc.accepted_contexts)
    for match in matches:
        if event.is_cancelled:
            logger.info("retrieve from %s cancelled", caller(event))
            yield CANCELLED, None
            return
        yield PENDING, _outgoing(node, match, accepted.get(match.sop_class, []))


def _outgoing(node: Node, match: Match, accepted: list[str]) -> Dataset:
    """The stored file when its syntax was accepted, else the instance transcoded to one that
    was, else an :class:`Outgoing` whose sub-operation fails."""
    syntax = choose_syntax(match.transfer_syntax, accepted, instance_targets(match.transfer_syntax))
    if syntax == match.transfer_syntax:
        return Outgoing(match, match.path)
    # pynetdicom logs the reason of a failed sub-operation (the exception send_c_store raises)
    if syntax is None:
        return Outgoing(match, None, f"no accepted transfer syntax for {match.transfer_syntax}")
    try:
        data = node.bridge.run(node.workers.run(transcode, match.path, syntax))
    except Exception as exc:  # a file gone (deleted meanwhile), pixel data that won't decode
        return Outgoing(match, None, f"transcoding to {syntax} failed: {exc}")
    return pydicom.dcmread(BytesIO(data))
