"""C-GET and C-MOVE SCP: the instances an identifier names, sent by C-STORE sub-operations.

C-GET sends them back on the requestor's own association, in the storage contexts where it
took the SCP role (PS3.4 C.4.3, PS3.7 D.3.3.4); C-MOVE opens an association, with pynetdicom,
to the destination named by its AE title among the ``--dicom-peer`` nodes (PS3.4 C.4.2). A
pending response follows each sub-operation with the counts so far; the final one is Success,
Warning B000 (some failed or had warnings), Failure A702 (every one failed) or Cancel FE00,
with the Failed SOP Instance UID List when any failed (PS3.4 C.4.2.1.4, C.4.3.1.4).

Each instance goes as stored when its syntax was accepted (the archive's bytes, streamed),
else transcoded in the worker processes to a syntax the peer accepted, else its
sub-operation fails (:mod:`.sending`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset, read_preamble
from pynetdicom import AE
from pynetdicom.association import Association as Outbound

from localdicom.catalog import read_ahead
from localdicom.dicom.pixels import transcode
from localdicom.dicom.syntaxes import instance_targets
from localdicom.dimse.messages import (
    C_STORE,
    CANCELLED,
    PENDING,
    SUCCESS,
    BadMessage,
    Command,
    Message,
)
from localdicom.dimse.selection import IdentifierError, Match, retrieve_keys, select
from localdicom.dimse.sending import choose_syntax, move_contexts, sendable_syntaxes
from localdicom.dimse.store import comment
from localdicom.settings import DicomPeer

if TYPE_CHECKING:
    from localdicom.dimse.association import Association

logger = logging.getLogger(__name__)

#: PS3.4 Tables C.4-2 (C-MOVE) and C.4-3 (C-GET): Identifier does not match SOP Class;
#: Move Destination unknown; sub-operations complete with failures or warnings; every
#: sub-operation failed.
IDENTIFIER_DOES_NOT_MATCH, DESTINATION_UNKNOWN = 0xA900, 0xA801
SOME_FAILED, ALL_FAILED = 0xB000, 0xA702
#: PS3.4 B.2.3: the C-STORE warnings (coercion, elements discarded, data set mismatch).
WARNINGS = frozenset({0xB000, 0xB006, 0xB007})
#: Seconds to wait for the receiver's answer to one sub-operation.
SUB_OPERATION_TIMEOUT = 120
#: Instances whose files are read ahead (:func:`read_ahead`) at a time, one window before
#: they are sent.
READ_AHEAD = 32

#: A Part 10 file: the preamble, "DICM", then (0002,0000) UL of length 4, explicit VR.
PREAMBLE, GROUP_LENGTH_VALUE, GROUP_LENGTH_END = 128, 140, 144
GROUP_LENGTH_ELEMENT = b"\x02\x00\x00\x00UL\x04\x00"

#: Sends one instance; its C-STORE status, or None when it could not be sent.
Sender = Callable[[Match], Awaitable[int | None]]


async def handle_get(association: Association, request: Message) -> None:
    """C-GET: each instance back to the requestor, on this association."""
    matches = await _selection(association, request, "C-GET")
    if matches is not None:
        await _sub_operations(association, request, matches, _back(association))


async def handle_move(association: Association, request: Message) -> None:
    """C-MOVE: each instance to the named ``--dicom-peer``, on an association of its own."""
    destination = request.command.get("MoveDestination", "")
    peer = association.node.peers.get(destination)
    if peer is None:
        logger.warning("C-MOVE from %s to unknown %r", association.caller, destination)
        why = comment(ValueError(f"{destination!r} is not a --dicom-peer of this server"))
        await association.respond(request, DESTINATION_UNKNOWN, details=why)
        return
    matches = await _selection(association, request, f"C-MOVE to {destination}")
    if matches is None:
        return
    outbound = await asyncio.to_thread(_associate, association.node.ae_title, peer, matches)
    if not outbound.is_established:
        why = comment(ValueError(f"{destination} at {peer.host}:{peer.port} did not accept"))
        await association.respond(request, DESTINATION_UNKNOWN, details=why)
        return
    try:
        sender = _to(association, outbound, request)
        await _sub_operations(association, request, matches, sender)
    finally:
        await asyncio.to_thread(outbound.release)


async def _selection(association: Association, request: Message, what: str) -> list[Match] | None:
    """The instances the Identifier names, or None once refused (A900 with the reason)."""
    try:
        identifier = request.identifier()
        keys = retrieve_keys(identifier, request.context.abstract_syntax)
    except (BadMessage, IdentifierError) as error:
        logger.warning("%s from %s refused: %s", what, association.caller, error)
        await association.respond(request, IDENTIFIER_DOES_NOT_MATCH, details=comment(error))
        return None
    matches = await select(association.node.catalog, keys)
    logger.info("%s from %s: %d instances", what, association.caller, len(matches))
    return matches


async def _sub_operations(
    association: Association, request: Message, matches: list[Match], send: Sender
) -> None:
    """Send each match, a pending response after each, then the final response; stop at a
    C-CANCEL (PS3.4 C.4.2.3, C.4.3.3)."""
    completed, warned, failed = 0, 0, []
    for done, match in enumerate(matches):
        if done % READ_AHEAD == 0:  # the next window's files (at first, this one's too)
            ahead = matches[done + READ_AHEAD if done else 0 : done + 2 * READ_AHEAD]
            await asyncio.to_thread(read_ahead, [each.path for each in ahead])
        if request.message_id in association.cancelled:
            logger.info("retrieve from %s cancelled", association.caller)
            counts = _counts(completed, warned, failed, remaining=len(matches) - done)
            await association.respond(request, CANCELLED, **counts, **_failures(failed))
            return
        status = await send(match)
        if status == SUCCESS:
            completed += 1
        elif status in WARNINGS:
            warned += 1
        else:
            failed.append(match.sop)
        counts = _counts(completed, warned, failed, remaining=len(matches) - done - 1)
        await association.respond(request, PENDING, **counts)
    final = SUCCESS if not (failed or warned) else SOME_FAILED
    if failed and len(failed) == len(matches):
        final = ALL_FAILED
    await association.respond(
        request, final, **_counts(completed, warned, failed), **_failures(failed)
    )


def _counts(completed: int, warned: int, failed: list[str], remaining: int | None = None) -> dict:
    counts = {
        "NumberOfCompletedSuboperations": completed,
        "NumberOfFailedSuboperations": len(failed),
        "NumberOfWarningSuboperations": warned,
    }
    if remaining is not None:
        counts["NumberOfRemainingSuboperations"] = remaining
    return counts


def _failures(failed: list[str]) -> dict:
    """The response's Identifier: the Failed SOP Instance UID List, when any failed."""
    if not failed:
        return {}
    identifier = Dataset()
    identifier.FailedSOPInstanceUIDList = failed
    return {"identifier": identifier}


def _storage_contexts(association: Association) -> dict[tuple[str, str], int]:
    """(SOP class, transfer syntax) -> the ID of a context where this side is the Storage SCU
    (the requestor took the SCP role by role selection)."""
    return {
        (str(context.abstract_syntax), str(context.transfer_syntax[0])): context_id
        for context_id, context in association.contexts.items()
        if context.as_scu
    }


def _back(association: Association) -> Sender:
    contexts = _storage_contexts(association)
    accepted = sendable_syntaxes(association.contexts.values())

    async def send(match: Match) -> int | None:
        outgoing = await _outgoing(association, match, accepted)
        if outgoing is None:
            return None
        syntax, content = outgoing
        context_id = contexts[match.sop_class, syntax]
        message_id = association.next_message_id()
        answer = association.expect_response(message_id)
        command = _store_request(match, message_id)
        try:
            if isinstance(content, Path):
                with open(content, "rb") as file:
                    file.seek(data_set_offset(file))
                    await association.send_file(context_id, command, file)
            else:
                data_set = content[data_set_offset(BytesIO(content)) :]
                await association.send(context_id, command, data_set)
            async with asyncio.timeout(SUB_OPERATION_TIMEOUT):
                return (await answer).get("Status")
        except (OSError, ValueError, TimeoutError) as error:
            logger.warning("%s not sent: %s", match.sop, error)
            return None

    return send


async def _outgoing(
    association: Association, match: Match, accepted: dict[str, list[str]]
) -> tuple[str, Path | bytes] | None:
    """The syntax an instance goes in and what to send: the stored file when its syntax was
    accepted, else its Part 10 bytes transcoded to one that was; None when it cannot go."""
    targets = instance_targets(match.transfer_syntax)
    syntax = choose_syntax(match.transfer_syntax, accepted.get(match.sop_class, []), targets)
    if syntax is None:
        logger.warning("%s: no accepted transfer syntax for %s", match.sop, match.transfer_syntax)
        return None
    if syntax == match.transfer_syntax:
        return syntax, match.path
    try:
        return syntax, await association.node.workers.run(transcode, match.path, syntax)
    except Exception as exc:  # a file gone (deleted meanwhile), pixel data that won't decode
        logger.warning("%s: transcoding to %s failed: %s", match.sop, syntax, exc)
        return None


def _store_request(match: Match, message_id: int) -> Command:
    """A C-STORE-RQ command set (PS3.7 9.3.1.1), medium priority."""
    return {
        "AffectedSOPClassUID": match.sop_class,
        "CommandField": C_STORE,
        "MessageID": message_id,
        "Priority": 0,
        "CommandDataSetType": 0,
        "AffectedSOPInstanceUID": match.sop,
    }


def data_set_offset(file: BinaryIO) -> int:
    """Where a DICOM file's data set starts: after its preamble and File Meta Information,
    whose group length says where it ends (PS3.10 7.1) when it comes first, as it should."""
    start = file.read(GROUP_LENGTH_END)
    if start[PREAMBLE:GROUP_LENGTH_VALUE] == b"DICM" + GROUP_LENGTH_ELEMENT:
        return GROUP_LENGTH_END + int.from_bytes(start[GROUP_LENGTH_VALUE:], "little")
    file.seek(0)
    read_preamble(file, False)
    read_dataset(file, False, True, stop_when=lambda tag, vr, length: tag.group != 2)
    return file.tell()


def _associate(ae_title: str, peer: DicomPeer, matches: list[Match]) -> Outbound:
    ae = AE(ae_title)
    ae.requested_contexts = move_contexts(matches)
    return ae.associate(peer.host, peer.port, ae_title=peer.ae_title)


def _to(association: Association, outbound: Outbound, request: Message) -> Sender:
    accepted = sendable_syntaxes(outbound.accepted_contexts)

    async def send(match: Match) -> int | None:
        outgoing = await _outgoing(association, match, accepted)
        if outgoing is None:
            return None
        _, content = outgoing
        dataset = content if isinstance(content, Path) else pydicom.dcmread(BytesIO(content))
        try:
            status = await asyncio.to_thread(
                outbound.send_c_store,
                dataset,
                originator_aet=association.agreement.calling_ae_title,
                originator_id=request.message_id,
            )
        except (OSError, ValueError) as error:
            logger.warning("%s not sent: %s", match.sop, error)
            return None
        return int(status.Status) if "Status" in status else None

    return send
