"""One association, from its request to its release or abort, on the server's event loop.

Its PDUs are read as they come (PS3.8 9.2, the acceptor's side of the state machine): the
fragments of each message are put together (PS3.7 E.2), a C-STORE's data set streams into
the Catalog as it arrives, and each request runs as a task while reading goes on, so that a
C-CANCEL reaches a C-FIND or C-GET in progress and a C-GET's own C-STORE responses reach it.
No thread and no polling: a request is answered as soon as its last PDU is in.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, BinaryIO

from pydicom.dataset import Dataset
from pynetdicom.presentation import PresentationContext

from localdicom.catalog import Arriving
from localdicom.dimse import find, pdus, retrieve, store
from localdicom.dimse.messages import (
    C_CANCEL,
    C_ECHO,
    C_FIND,
    C_GET,
    C_MOVE,
    C_STORE,
    RESPONSE,
    SUCCESS,
    BadMessage,
    Command,
    Message,
    decode_command,
    encode_command,
    encode_data_set,
    encode_json,
    response,
)
from localdicom.dimse.negotiation import Agreement

if TYPE_CHECKING:
    from localdicom.dimse.node import Node

logger = logging.getLogger(__name__)

#: PS3.7 C.4.2: the operation is not one this SOP class has (Unrecognized Operation).
UNRECOGNIZED_OPERATION = 0x0211
#: Largest Identifier accepted (a query's keys; a C-STORE's data set streams instead).
IDENTIFIER_LIMIT = 1 << 20
#: Bytes of queued PDUs beyond which a sender writes them and waits for the socket.
FLUSH_BYTES = 1 << 20
SERVICES = {C_FIND: find.handle_find, C_GET: retrieve.handle_get, C_MOVE: retrieve.handle_move}


class Association:
    """An accepted association: its agreement, its stream, and the requests in progress."""

    def __init__(
        self,
        node: Node,
        agreement: Agreement,
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        limits: tuple[int, float, float],
        address: str,
    ) -> None:
        self.node = node
        self.agreement = agreement
        self.reader, self.writer = streams
        self.maximum_pdu, self.idle_timeout, self.close_timeout = limits
        self.fragment = pdus.fragment_size(agreement.peer_maximum_pdu, self.maximum_pdu)
        self.caller = f"{agreement.calling_ae_title}@{address}"
        self.cancelled: set[int] = set()  # Message IDs a C-CANCEL named
        self._tasks: set[asyncio.Task] = set()
        self._command = bytearray()
        self._receiving: Message | None = None  # a request whose data set is arriving
        self._data = bytearray()
        self._arriving: Arriving | None = None  # the instance of a C-STORE being received
        self._stores: set[asyncio.Task] = set()  # C-STOREs received whole, being stored
        self._responses: dict[int, asyncio.Future[Command]] = {}
        self._sending = asyncio.Lock()
        self._queued: list[bytes | memoryview] = []
        self._queued_bytes = 0
        self._next_id = 0

    @property
    def contexts(self) -> dict[int, PresentationContext]:
        return self.agreement.contexts

    # reading -----------------------------------------------------------------------------

    async def serve(self) -> None:
        """Read and answer until the peer releases or aborts, the connection is lost, or it
        idles past the timeout (then: A-ABORT)."""
        try:
            while True:
                async with asyncio.timeout(self.idle_timeout):
                    kind, body = await pdus.read_pdu(self.reader, self.maximum_pdu)
                if kind == pdus.P_DATA_TF:
                    self._p_data(body)
                elif kind == pdus.RELEASE_RQ:
                    await self._release()
                    await pdus.linger(self.reader, self.close_timeout)
                    return
                elif kind == pdus.ABORT:
                    logger.info("association with %s aborted by the peer", self.caller)
                    return
                else:
                    raise pdus.ProtocolError(pdus.UNEXPECTED_PDU, f"PDU type 0x{kind:02X}")
        except pdus.ProtocolError as error:
            logger.warning("association with %s aborted: %s", self.caller, error)
            self._emit(pdus.abort(error.reason))
            await pdus.linger(self.reader, self.close_timeout)
        except TimeoutError:
            logger.warning("association with %s idle too long: aborted", self.caller)
            self._emit(pdus.abort())
            await pdus.linger(self.reader, self.close_timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            logger.info("connection with %s lost", self.caller)
        except asyncio.CancelledError:  # the server is stopping: the peer is told (PS3.8 7.3)
            self._emit(pdus.abort(source=pdus.USER))
            raise
        finally:
            await self._end()

    def _p_data(self, body: bytes) -> None:
        for context_id, control, fragment in pdus.fragments(body):
            context = self.contexts.get(context_id)
            if context is None:
                raise pdus.ProtocolError(
                    pdus.INVALID_PARAMETER, f"presentation context {context_id} not accepted"
                )
            last = bool(control & pdus.LAST)
            if control & pdus.COMMAND:
                self._command += fragment
                if last:
                    self._command_complete(context)
            else:
                self._data_fragment(fragment, last)

    def _command_complete(self, context: PresentationContext) -> None:
        if self._receiving is not None:
            raise pdus.ProtocolError(pdus.UNEXPECTED_PDU, "a command inside a data set")
        try:
            message = Message(context, decode_command(bytes(self._command)))
        except BadMessage as error:
            raise pdus.ProtocolError(pdus.INVALID_PARAMETER, str(error)) from error
        self._command.clear()
        if not message.has_data_set:
            self._dispatch(message)
        else:
            self._receiving = message
            if message.field == C_STORE:
                self._arriving = store.incoming(self.node.catalog, message)

    def _data_fragment(self, fragment: memoryview, last: bool) -> None:
        message = self._receiving
        if message is None:
            raise pdus.ProtocolError(pdus.UNEXPECTED_PDU, "a data set with no command")
        if self._arriving is not None:
            self._arriving.write(fragment)  # a view of the PDU read: no copy
            if last:
                task = self._start(store.handle_store, message, self._arriving)
                self._stores.add(task)
                task.add_done_callback(self._stores.discard)
                self._arriving = None
        else:
            self._data += fragment
            if len(self._data) > IDENTIFIER_LIMIT:
                raise pdus.ProtocolError(pdus.INVALID_PARAMETER, "an Identifier over 1 MiB")
            if last:
                message.data = bytes(self._data)
                self._data.clear()
                self._dispatch(message)
        if last:
            self._receiving = None

    def _dispatch(self, message: Message) -> None:
        if message.field == C_CANCEL:
            self.cancelled.add(message.command.get("MessageIDBeingRespondedTo", 0))
        elif message.field == C_STORE | RESPONSE:
            answered = message.command.get("MessageIDBeingRespondedTo", 0)
            waiting = self._responses.pop(answered, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(message.command)
        elif message.field == C_ECHO:
            self._start(_echo, message)
        elif message.field in SERVICES:
            self._start(SERVICES[message.field], message)
        else:
            self._start(_unrecognized, message)

    def _start(self, service: Callable, *args: object) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(service(self, *args))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("a request of %s failed", self.caller, exc_info=task.exception())
            self._emit(pdus.abort())
            self.writer.close()

    async def _release(self) -> None:
        """A-RELEASE-RP once every request in progress is answered (PS3.8 7.2); a release
        in the middle of a message is a protocol error."""
        if self._receiving is not None or self._command:
            raise pdus.ProtocolError(pdus.UNEXPECTED_PDU, "A-RELEASE-RQ inside a message")
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        self._emit(pdus.release_rp())
        logger.debug("association with %s released", self.caller)

    async def _end(self) -> None:
        """Stop what the association started: a C-STORE cut short fails (its partial data
        set is discarded by the Catalog), a whole one is stored, the rest is cancelled."""
        if self._arriving is not None:
            logger.info("C-STORE from %s cut short: nothing stored", self.caller)
            self._arriving.abandon()
            self._arriving = None
        for waiting in self._responses.values():
            waiting.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            if task not in self._stores:
                task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._flush()
        with suppress(ConnectionError):
            await self._drain(self.close_timeout)
        self.writer.close()

    # writing -----------------------------------------------------------------------------

    async def respond(
        self,
        request: Message,
        status: int,
        *,
        details: Dataset | None = None,
        identifier: Dataset | dict[str, Any] | None = None,
        **fields: object,
    ) -> None:
        """Send the response to ``request``: its status, ``details`` (Error Comment, Offending
        Element) and other command ``fields``, and an ``identifier`` data set (a Dataset, or
        DICOM JSON)."""
        command = response(request, status, identifier is not None)
        command.update(fields)
        if details is not None:
            command.update((element.keyword, element.value) for element in details)
        data = None
        syntax = request.context.transfer_syntax[0]
        if isinstance(identifier, dict):
            data = encode_json(identifier, syntax)
        elif identifier is not None:
            data = encode_data_set(identifier, syntax)
        await self.send(request.context.context_id, command, data)

    async def send(self, context_id: int, command: Command, data: bytes | None = None) -> None:
        """One message: its command set, then its data set, each in P-DATA-TFs."""
        async with self._sending:
            self._queue(context_id, encode_command(command), True)
            if data is not None:
                self._queue(context_id, data, False)
            if self._queued_bytes >= FLUSH_BYTES:
                self._flush()
                await self._drain(self.idle_timeout)

    async def send_file(self, context_id: int, command: Command, file: BinaryIO) -> None:
        """One message whose data set is the rest of an open ``file``, read straight into its
        P-DATA-TFs a block at a time (the archive replaces files by renaming: an open one
        stays whole)."""
        async with self._sending:
            self._queue(context_id, encode_command(command), True)
            self._flush()
            remaining = os.fstat(file.fileno()).st_size - file.tell()
            while True:
                block, remaining = pdus.read_pdus(file, context_id, self.fragment, remaining)
                self.writer.write(block)
                await self._drain(self.idle_timeout)
                if remaining == 0:
                    return

    async def _drain(self, seconds: float) -> None:
        """Wait until the peer has taken what was written, up to its buffers. A peer that
        takes nothing for ``seconds`` (it stopped reading) loses the connection, rather than
        hold this association, and a server that stops, for ever; a slow one is waited for."""
        transport = self.writer.transport
        while True:
            waiting = transport.get_write_buffer_size()
            try:
                async with asyncio.timeout(seconds):
                    await self.writer.drain()
                return
            except TimeoutError:
                if transport.get_write_buffer_size() < waiting:
                    continue
                transport.abort()
                raise ConnectionError(f"{self.caller} took nothing for {seconds:g} s") from None

    def _queue(self, context_id: int, data: bytes, is_command: bool) -> None:
        """Add a message's PDUs to what goes out when this task next yields to the loop: the
        responses a C-FIND sends between two waits leave in one write, not two each."""
        if not self._queued:
            asyncio.get_running_loop().call_soon(self._flush)
        for pieces in pdus.message_pdus(context_id, data, is_command, self.fragment):
            self._queued.extend(pieces)
            self._queued_bytes += sum(len(piece) for piece in pieces)

    def _flush(self) -> None:
        if self._queued:
            self.writer.writelines(self._queued)
            self._queued.clear()
            self._queued_bytes = 0

    def _emit(self, pdu: bytes) -> None:
        """A PDU that goes out now, after whatever is queued."""
        self._flush()
        self.writer.write(pdu)

    def next_message_id(self) -> int:
        self._next_id = self._next_id % 0xFFFF + 1
        return self._next_id

    def expect_response(self, message_id: int) -> asyncio.Future[Command]:
        """The command set of the C-STORE response to ``message_id``, when it comes."""
        waiting = asyncio.get_running_loop().create_future()
        self._responses[message_id] = waiting
        return waiting


async def _echo(association: Association, message: Message) -> None:
    """C-ECHO (PS3.7 9.1.5): success."""
    await association.respond(message, SUCCESS)


async def _unrecognized(association: Association, message: Message) -> None:
    logger.warning("%s sent command 0x%04X, not served", association.caller, message.field)
    await association.respond(message, UNRECOGNIZED_OPERATION)
