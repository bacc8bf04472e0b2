"""The DICOM (DIMSE) listener beside the HTTP server, on the same event loop: each connection
is negotiated (:mod:`.negotiation`) and then served (:mod:`.association`), its requests
calling the Catalog directly (:mod:`.store`, :mod:`.find`, :mod:`.retrieve`).

pynetdicom decodes and encodes the PDUs and DIMSE messages, but its threaded reactors are
not used to receive: they poll every millisecond in two threads per association and hand
each message across queues, which cost a C-STORE more CPU than storing the instance. C-MOVE's
outgoing associations are pynetdicom's own, in a thread.
"""

from __future__ import annotations

import asyncio
import logging

from pynetdicom import _config

from localdicom.dimse import pdus
from localdicom.dimse.association import Association
from localdicom.dimse.negotiation import Policy, Rejected, negotiate, supported_contexts
from localdicom.dimse.node import Node

logger = logging.getLogger(__name__)

#: Associations served at once; more are rejected (transient, "local limit exceeded").
MAX_ASSOCIATIONS = 32
#: Largest PDU this server receives (a large C-STORE in few PDUs; a peer cannot make it
#: hold more than this at once).
MAX_PDU = 1 << 20
#: Bytes a connection's reader buffers before it stops reading the socket for a while (it
#: stops at twice this): asyncio's 64 KiB paused and resumed it (two system calls each) for
#: every 128 KiB PDU dcmtk sends.
READ_BUFFER = 256 * 1024
#: Seconds to wait for the association request (PS3.8 9.1.5, the ARTIM timer), and for
#: anything at all on an established association.
ACSE_TIMEOUT = 30
NETWORK_TIMEOUT = 120


class CannotListen(Exception):
    """The DICOM port could not be opened (in use, not permitted): where, and why."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {error}")
        self.host, self.port, self.error = host, port, error


class DimseServer:
    """Listens for associations until :meth:`close`."""

    def __init__(self, node: Node, *, restrict_callers: bool) -> None:
        _config.STORE_SEND_CHUNKED_DATASET = True  # C-MOVE: stored files go out undecoded
        _config.LOG_HANDLER_LEVEL = "none"
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # no line per association
        self.node = node
        callers = set(node.peers) if restrict_callers else None
        self.policy = Policy(supported_contexts(), MAX_PDU, callers)
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task] = set()
        self.associations = 0

    async def start(self, host: str, port: int) -> None:
        try:
            self.server = await asyncio.start_server(self._connected, host, port, limit=READ_BUFFER)
        except OSError as exc:
            raise CannotListen(host, port, exc) from exc

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections):
            connection.cancel()
        if self.connections:
            await asyncio.wait(list(self.connections))

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # The server is stopping (:meth:`close`); an association has told its peer. The
            # task ends rather than raise: Python 3.11's start_server would log the
            # cancellation with a traceback (its streams.py reads the task's exception).
            pass
        finally:
            self.connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = "{}:{}".format(*writer.get_extra_info("peername")[:2])
        try:
            async with asyncio.timeout(ACSE_TIMEOUT):
                kind, body = await pdus.read_pdu(reader, MAX_PDU)
            if kind != pdus.ASSOCIATE_RQ:
                raise pdus.ProtocolError(pdus.UNEXPECTED_PDU, f"PDU type 0x{kind:02X} first")
            full = self.associations >= MAX_ASSOCIATIONS
            agreement, accept = negotiate(body, self.policy, full)
        except Rejected as rejected:
            logger.warning("association from %s rejected: %s", address, rejected)
            writer.write(rejected.answer)
            await pdus.linger(reader, ACSE_TIMEOUT)
            return
        except pdus.ProtocolError as error:
            logger.warning("association from %s aborted: %s", address, error)
            writer.write(pdus.abort(error.reason))
            await pdus.linger(reader, ACSE_TIMEOUT)
            return
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return  # no request in time, or the connection closed before a whole PDU
        writer.write(accept)
        self.associations += 1
        try:
            limits = (MAX_PDU, NETWORK_TIMEOUT, ACSE_TIMEOUT)
            await Association(self.node, agreement, (reader, writer), limits, address).serve()
        finally:
            self.associations -= 1
