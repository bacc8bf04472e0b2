"""Association negotiation as the acceptor (PS3.8 7.1, PS3.7 D.3.3): an A-ASSOCIATE-RQ in,
an A-ASSOCIATE-AC or -RJ out.

pynetdicom decodes and encodes the PDUs and negotiates the presentation contexts and the
SCP/SCU roles; this module says what this server supports and whom it accepts. Extended
negotiation the requestor proposes (asynchronous operations, SOP class extended, user
identity) is answered by leaving it out, which PS3.7 D.3.3.3-D.3.3.7 reads as not supported:
one operation at a time, no identity checked.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from pydicom.uid import UID
from pynetdicom import (
    ALL_TRANSFER_SYNTAXES,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
)
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import (
    AllStoragePresentationContexts,
    PresentationContext,
    build_context,
    negotiate_as_acceptor,
)
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from localdicom.dimse import pdus
from localdicom.dimse.sending import requestor_first

#: PS3.7 A.2.1: the DICOM Application Context Name.
APPLICATION_CONTEXT = UID("1.2.840.10008.3.1.1.1")
QUERY_RETRIEVE = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

#: A-ASSOCIATE-RJ (result, source, reason), PS3.8 Table 9-21: rejected permanently by the
#: service user, calling AE title not recognized; rejected transiently by the service
#: provider (presentation related function), local limit exceeded.
CALLER_UNKNOWN = (0x01, 0x01, 0x03)
TOO_MANY = (0x02, 0x03, 0x02)
#: Distinct association requests whose agreement is kept (a few per peer that connects), and
#: the largest kept (dcmtk's getscu proposes 121 contexts in 17 KB).
AGREEMENTS_KEPT, AGREEMENT_BYTES = 64, 64 * 1024


def supported_contexts() -> list[PresentationContext]:
    """Verification, every Storage SOP class pydicom knows in every transfer syntax (as the
    SCP of C-STORE; a C-GET requestor may take the SCP role by role selection), and the
    Patient and Study Root Query/Retrieve models."""
    contexts = [build_context(Verification, ALL_TRANSFER_SYNTAXES)]
    for storage in AllStoragePresentationContexts:
        context = build_context(storage.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        context.scp_role, context.scu_role = True, False
        contexts.append(context)
    contexts.extend(build_context(model) for model in QUERY_RETRIEVE)
    return contexts


@dataclass(frozen=True)
class Agreement:
    """An accepted association: who asked, the largest PDU they receive (0: no limit), and
    the accepted presentation contexts by ID."""

    calling_ae_title: str
    peer_maximum_pdu: int
    contexts: dict[int, PresentationContext]


@dataclass(frozen=True)
class Policy:
    """What this server accepts: its contexts, its largest PDU, and the calling AE titles
    allowed (None: any); and the agreements it made, by the request's bytes
    (:func:`negotiate`)."""

    contexts: list[PresentationContext]
    maximum_pdu: int
    callers: Collection[str] | None
    agreed: dict[bytes, tuple[Agreement, bytes]] = field(
        default_factory=dict, compare=False, repr=False
    )


class Rejected(Exception):
    """An association request refused; ``answer`` is the A-ASSOCIATE-RJ to send."""

    def __init__(self, answer: bytes, why: str) -> None:
        super().__init__(why)
        self.answer = answer


def negotiate(body: bytes, policy: Policy, full: bool) -> tuple[Agreement, bytes]:
    """The agreement on an A-ASSOCIATE-RQ's body and the A-ASSOCIATE-AC to send; raises
    :class:`Rejected` (the caller unknown, or ``full``: as many associations as served at
    once) or :class:`pdus.ProtocolError` (a request that cannot be decoded).

    A request made before gets the same answer, from memory: a peer proposes the same
    contexts association after association, and pynetdicom takes 8-15 ms to decode and
    answer a hundred of them (it validates every UID), more than a C-GET of a series
    spends on anything else but sending."""
    known = policy.agreed.get(body)
    if known is None:
        known = _negotiated(body, policy, full)
        if len(body) <= AGREEMENT_BYTES:
            if len(policy.agreed) >= AGREEMENTS_KEPT:
                del policy.agreed[next(iter(policy.agreed))]  # the oldest
            policy.agreed[body] = known
    elif full:
        raise Rejected(*_too_many())
    return known


def _negotiated(body: bytes, policy: Policy, full: bool) -> tuple[Agreement, bytes]:
    request = _decoded(body)
    calling = request.calling_ae_title.strip()
    if policy.callers is not None and calling not in policy.callers:
        raise Rejected(_reject(*CALLER_UNKNOWN), f"calling AE title {calling!r} not accepted")
    if full:  # refused before the contexts are worked out
        raise Rejected(*_too_many())
    proposed = request.presentation_context_definition_list
    roles = {
        item.sop_class_uid: (item.scu_role, item.scp_role)
        for item in request.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
    }
    receivers = {str(uid) for uid, (_, scp) in roles.items() if scp}
    ours = requestor_first(policy.contexts, proposed, receivers) if receivers else policy.contexts
    results, role_replies = negotiate_as_acceptor(proposed, ours, roles)
    accepted = {c.context_id: c for c in results if c.result == 0x00}
    agreement = Agreement(calling, request.maximum_length_received or 0, accepted)
    return agreement, _accept(request, results, role_replies, policy.maximum_pdu)


def _decoded(body: bytes) -> A_ASSOCIATE:
    request = A_ASSOCIATE_RQ()
    try:
        request.decode(pdus.pdu(pdus.ASSOCIATE_RQ, body))
        return request.to_primitive()
    except Exception as exc:  # whatever nonsense makes pynetdicom's decoder raise
        raise pdus.ProtocolError(
            pdus.INVALID_PARAMETER, f"an association request that cannot be read: {exc}"
        ) from exc


def _accept(
    request: A_ASSOCIATE,
    results: list[PresentationContext],
    role_replies: list[SCP_SCU_RoleSelectionNegotiation],
    maximum_pdu: int,
) -> bytes:
    answer = A_ASSOCIATE()
    answer.application_context_name = APPLICATION_CONTEXT
    answer.calling_ae_title = request.calling_ae_title
    answer.called_ae_title = request.called_ae_title
    answer.result, answer.result_source = 0x00, 0x01
    answer.presentation_context_definition_results_list = results
    answer.user_information = [_maximum_length(maximum_pdu), *_implementation(), *role_replies]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(answer)
    return pdu.encode()


def _too_many() -> tuple[bytes, str]:
    return _reject(*TOO_MANY), "as many associations as served at once"


def _reject(result: int, source: int, reason: int) -> bytes:
    answer = A_ASSOCIATE()
    answer.result, answer.result_source, answer.diagnostic = result, source, reason
    pdu = A_ASSOCIATE_RJ()
    pdu.from_primitive(answer)
    return pdu.encode()


def _maximum_length(maximum_pdu: int) -> MaximumLengthNotification:
    item = MaximumLengthNotification()
    item.maximum_length_received = maximum_pdu
    return item


def _implementation() -> list:
    uid = ImplementationClassUIDNotification()
    uid.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
    return [uid, version]
