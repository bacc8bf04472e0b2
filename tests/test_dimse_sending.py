"""The pure part of C-GET/C-MOVE: which instances an identifier names, which transfer syntax
each goes out in, what a C-MOVE proposes, and how a stored file reaches ``send_c_store``."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import ALL_TRANSFER_SYNTAXES
from pynetdicom.presentation import build_context, negotiate_as_acceptor
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from localdicom.dicom.syntaxes import instance_targets
from localdicom.dimse.selection import IdentifierError, Keys, Match, retrieve_keys
from localdicom.dimse.sending import (
    MAX_CONTEXTS,
    choose_syntax,
    move_contexts,
    requestor_first,
    sendable_syntaxes,
)
from tests.helpers.dimse import identifier

STUDY, SERIES, SOP, SOP2 = "1.2.3", "1.2.3.4", "1.2.3.4.5", "1.2.3.4.6"


def match(sop_class: str, syntax: str, sop: str = SOP) -> Match:
    return Match(sop_class, sop, syntax, Path(f"/archive/{sop}.dcm"))


# choice of transfer syntax (PS3.4 C.4.3.3: an instance the peer cannot take fails) ----------


def test_an_instance_goes_as_stored_when_its_syntax_was_accepted():
    targets = instance_targets(JPEG2000Lossless)
    accepted = [ExplicitVRLittleEndian, JPEG2000Lossless]
    assert choose_syntax(JPEG2000Lossless, accepted, targets) == JPEG2000Lossless


def test_else_in_the_first_syntax_it_can_be_rewritten_in_that_was_accepted():
    targets = instance_targets(JPEG2000Lossless)
    assert targets.index(ExplicitVRLittleEndian) < targets.index(ImplicitVRLittleEndian)
    accepted = [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
    assert choose_syntax(JPEG2000Lossless, accepted, targets) == ExplicitVRLittleEndian
    assert choose_syntax(JPEG2000Lossless, [RLELossless], targets) == RLELossless


def test_else_not_at_all():
    """Lossy JPEG is never made from other data (instance_targets), and nothing accepted
    leaves nothing to send in."""
    targets = instance_targets(ExplicitVRBigEndian)
    assert choose_syntax(ExplicitVRBigEndian, [JPEGBaseline8Bit], targets) is None
    assert choose_syntax(JPEGLSLossless, [], instance_targets(JPEGLSLossless)) is None


# negotiation: what this side may send in (PS3.7 D.3.3.4 SCP/SCU role selection) -----------


def supported() -> list:
    """Storage contexts as the server supports them: every syntax, the requestor as SCP."""
    contexts = [
        build_context(uid, ALL_TRANSFER_SYNTAXES) for uid in (CTImageStorage, MRImageStorage)
    ]
    for context in contexts:
        context.scu_role, context.scp_role = False, True
    return contexts


def proposed(*contexts: tuple[str, list[str]]) -> list:
    built = [build_context(uid, syntaxes) for uid, syntaxes in contexts]
    for number, context in enumerate(built):
        context.context_id = 2 * number + 1
    return built


def test_only_contexts_where_the_requestor_is_the_scp_carry_get_sub_operations():
    request = proposed(
        (CTImageStorage, [ExplicitVRLittleEndian]), (MRImageStorage, [ExplicitVRLittleEndian])
    )
    roles = {CTImageStorage: (False, True)}  # (SCU, SCP) of the requestor, for CT only
    accepted, _ = negotiate_as_acceptor(request, supported(), roles)
    assert sendable_syntaxes(accepted) == {CTImageStorage: [ExplicitVRLittleEndian]}


def test_the_requestors_order_decides_the_syntax_of_its_storage_contexts():
    """pynetdicom takes the first of the acceptor's syntaxes that was proposed (Implicit VR
    first, for the list of all); with the requestor's order, getscu +xv gets JPEG 2000."""
    request = proposed(
        (CTImageStorage, [JPEG2000Lossless, ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (MRImageStorage, [RLELossless]),
        (MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
    )
    roles = {CTImageStorage: (False, True), MRImageStorage: (False, True)}
    as_is, _ = negotiate_as_acceptor(request, supported(), roles)
    assert sendable_syntaxes(as_is)[CTImageStorage] == [ImplicitVRLittleEndian]

    reordered = requestor_first(supported(), request, {CTImageStorage, MRImageStorage})
    accepted, _ = negotiate_as_acceptor(request, reordered, roles)
    assert sendable_syntaxes(accepted) == {
        CTImageStorage: [JPEG2000Lossless],
        MRImageStorage: [RLELossless, ExplicitVRLittleEndian],
    }
    assert [(c.scu_role, c.scp_role) for c in reordered] == [(False, True)] * 2
    # what was not proposed plays no part in the choice (PS3.8 9.3.3.2): it is left out
    assert reordered[0].transfer_syntax == [
        JPEG2000Lossless,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    ]


def test_storage_contexts_without_the_scp_role_keep_our_order():
    request = proposed((CTImageStorage, [JPEG2000Lossless, ExplicitVRLittleEndian]))
    reordered = requestor_first(supported(), request, set())
    assert [c.transfer_syntax for c in reordered] == [c.transfer_syntax for c in supported()]


# what a C-MOVE proposes (PS3.8 9.3.2.2: at most 128 presentation contexts) ----------------


def test_a_move_proposes_a_fallback_per_sop_class_and_each_stored_syntax():
    matches = [
        match(CTImageStorage, ExplicitVRLittleEndian, "1.1"),
        match(CTImageStorage, JPEG2000Lossless, "1.2"),
        match(MRImageStorage, ExplicitVRBigEndian, "1.3"),
        match(MRImageStorage, ExplicitVRBigEndian, "1.4"),
    ]
    contexts = [(c.abstract_syntax, c.transfer_syntax) for c in move_contexts(matches)]
    fallback = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert contexts == [
        (CTImageStorage, fallback),
        (MRImageStorage, fallback),
        (CTImageStorage, [ExplicitVRLittleEndian]),
        (CTImageStorage, [JPEG2000Lossless]),
        (MRImageStorage, [ExplicitVRBigEndian]),
    ]


def test_a_move_proposes_at_most_128_contexts_fallbacks_first():
    matches = [
        match(f"1.2.840.10008.5.1.4.1.1.{n}", JPEG2000Lossless, f"1.{n}") for n in range(100)
    ]
    contexts = move_contexts(matches)
    assert len(contexts) == MAX_CONTEXTS == 128
    assert all(len(c.transfer_syntax) == 2 for c in contexts[:100])
    assert all(c.transfer_syntax == [JPEG2000Lossless] for c in contexts[100:])


# the keys of a retrieve (PS3.4 C.4.2.2, C.4.3.2, C.6.1, C.6.2) ----------------------------


def test_keys_at_each_level():
    study_root = StudyRootQueryRetrieveInformationModelGet
    assert retrieve_keys(identifier("STUDY", StudyInstanceUID=[STUDY, "1.9"]), study_root) == Keys(
        "STUDY", studies=(STUDY, "1.9")
    )
    series = identifier("SERIES", StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES)
    assert retrieve_keys(series, study_root) == Keys("SERIES", studies=(STUDY,), series=(SERIES,))
    image = identifier(
        "IMAGE", StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, SOPInstanceUID=[SOP, SOP2]
    )
    assert retrieve_keys(image, StudyRootQueryRetrieveInformationModelMove).sops == (SOP, SOP2)
    patient = identifier("PATIENT", PatientID="P-1")
    assert retrieve_keys(patient, PatientRootQueryRetrieveInformationModelGet) == Keys(
        "PATIENT", patient="P-1"
    )


@pytest.mark.parametrize(
    "level, keys",
    [
        ("PATIENT", {"PatientID": "P-1"}),  # Study Root has no patient level
        ("", {"StudyInstanceUID": STUDY}),
        ("FRAME", {"StudyInstanceUID": STUDY}),
        ("STUDY", {}),
        ("STUDY", {"StudyInstanceUID": "1.02.3"}),
        ("SERIES", {"StudyInstanceUID": [STUDY, "1.9"], "SeriesInstanceUID": SERIES}),
        ("SERIES", {"StudyInstanceUID": STUDY}),
        ("IMAGE", {"StudyInstanceUID": STUDY, "SeriesInstanceUID": SERIES}),
    ],
)
def test_keys_that_do_not_match_the_model_are_refused(level: str, keys: dict):
    with pytest.raises(IdentifierError):
        retrieve_keys(identifier(level, **keys), StudyRootQueryRetrieveInformationModelGet)


def test_a_patient_is_one_patient_id():
    with pytest.raises(IdentifierError):
        retrieve_keys(identifier("PATIENT"), PatientRootQueryRetrieveInformationModelGet)
