"""The DICOM (DIMSE) listener beside the HTTP server: a pynetdicom Application Entity whose
handlers (:mod:`.store`, :mod:`.find`, :mod:`.retrieve`) are thin callers of the Catalog.
C-ECHO is pynetdicom's own answer (success) to the Verification service."""

from __future__ import annotations

import logging
import socket

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, evt
from pynetdicom.events import Event
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from localdicom.dimse import find, retrieve, sending, store
from localdicom.dimse.node import Node

logger = logging.getLogger(__name__)

#: Associations served at once; more are rejected (transient, "local limit exceeded").
MAX_ASSOCIATIONS = 32
#: Largest PDU this server receives (pynetdicom's default 16 KiB makes a large C-STORE
#: thousands of PDUs; 0, unlimited, would let a peer make it allocate anything).
MAX_PDU = 1 << 20
#: Seconds to wait for association negotiation (PS3.8 9.1.5, the ARTIM timer), for a DIMSE
#: message, and for anything at all on an idle association.
ACSE_TIMEOUT = 30
DIMSE_TIMEOUT = 120
NETWORK_TIMEOUT = 120

QUERY_RETRIEVE = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)


class DimseServer:
    """Listens for associations until :meth:`close`."""

    def __init__(self, node: Node, host: str, port: int, *, restrict_callers: bool) -> None:
        _config.STORE_RECV_CHUNKED_DATASET = True  # received datasets go to a file, not memory
        _config.STORE_SEND_CHUNKED_DATASET = True  # stored files go out without decoding
        _config.LOG_HANDLER_LEVEL = "none"
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # no line per association
        self.ae = _application_entity(node.ae_title, restrict_callers and list(node.peers))
        self.server: ThreadedAssociationServer = self.ae.start_server(
            (host, port), block=False, evt_handlers=_handlers(node)
        )

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()


def _application_entity(ae_title: str, callers: list[str] | bool) -> AE:
    ae = AE(ae_title)
    ae.maximum_associations = MAX_ASSOCIATIONS
    ae.maximum_pdu_size = MAX_PDU
    ae.acse_timeout = ACSE_TIMEOUT
    ae.dimse_timeout = DIMSE_TIMEOUT
    ae.network_timeout = NETWORK_TIMEOUT
    if callers:
        ae.require_calling_aet = callers
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        # scp_role: C-STORE received; scu_role: a C-GET requester's own storage contexts
        ae.add_supported_context(
            context.abstract_syntax, ALL_TRANSFER_SYNTAXES, scp_role=True, scu_role=False
        )
    for abstract_syntax in QUERY_RETRIEVE:
        ae.add_supported_context(abstract_syntax)
    return ae


def _handlers(node: Node) -> list:
    return [
        (evt.EVT_CONN_OPEN, _no_delay),
        (evt.EVT_REQUESTED, sending.prefer_requestor_syntaxes),
        (evt.EVT_C_STORE, store.handle_store, [node]),
        (evt.EVT_C_FIND, find.handle_find, [node]),
        (evt.EVT_C_GET, retrieve.handle_get, [node]),
        (evt.EVT_C_MOVE, retrieve.handle_move, [node]),
        (evt.EVT_CONN_CLOSE, store.discard_partial),
    ]


def _no_delay(event: Event) -> None:
    """Send each PDU at once. With Nagle's algorithm (RFC 896) on, as pynetdicom leaves it,
    the last small PDU of an answer (a C-FIND response, a C-STORE request's command) waits
    for the peer's delayed acknowledgement, tens of milliseconds each."""
    connection = event.assoc.dul.socket
    if connection is not None and connection.socket is not None:
        connection.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
