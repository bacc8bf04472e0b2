"""C-FIND SCP (PS3.4 C.4.1), Patient Root and Study Root: a live server holding the sample
files, pydicom's test files and a synthetic series, all stored by STOW-RS, asked by dcmtk's
findscu (responses extracted to files and read with pydicom) and by pynetdicom (C-CANCEL,
failure statuses); every answer is compared with pydicom's reading of the original files.
The handler's cancel and delete races are driven in process, deterministically."""

from __future__ import annotations

import asyncio
import re
import struct
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dsutils import encode
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from localdicom.archive import Archive
from localdicom.catalog import Catalog
from localdicom.dimse import find
from localdicom.dimse.find import handle_find
from localdicom.dimse.messages import Message
from localdicom.dimse.node import Node
from tests.helpers import (
    SAMPLES,
    SERIES_CIRCLE,
    SERIES_SQUARE_TRIANGLE,
    SOP_BLUE_CIRCLE,
    SOP_GREEN_SQUARE,
    SOP_RED_TRIANGLE,
    STUDY_UID,
    free_port,
    prepare_here,
    write_series,
)
from tests.helpers.dimse import identifier
from tests.helpers.http import multipart
from tests.helpers.live import LiveServer, request

#: Most tests here talk to a live server with dcmtk's findscu.
pytestmark = pytest.mark.external
FINDSCU = "/usr/bin/findscu"  # dcmtk's, not pynetdicom's console script of the same name
AE_TITLE = "LOCALDICOM"
PYDICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm", "SC_rgb.dcm")
CHARSET_FILES = ("chrRuss.dcm", "chrH31.dcm")
#: Synthetic slices of one series: enough matches for a C-CANCEL to arrive mid-answer.
MANY = 1000
OWN_KEYWORDS = {"SpecificCharacterSet", "QueryRetrieveLevel", "RetrieveAETitle"}
SAMPLE_SOPS = {SOP_BLUE_CIRCLE, SOP_GREEN_SQUARE, SOP_RED_TRIANGLE}


@dataclass
class Stocked:
    """The live server and pydicom's reading of every file stored in it."""

    server: LiveServer
    dicom_port: int
    originals: list[Dataset]
    synthetic_study: str

    def studies(self) -> dict[str, list[Dataset]]:
        grouped: dict[str, list[Dataset]] = defaultdict(list)
        for ds in self.originals:
            grouped[ds.StudyInstanceUID].append(ds)
        return grouped

    def original(self, sop: str) -> Dataset:
        return next(ds for ds in self.originals if ds.SOPInstanceUID == sop)


def stored_files(folder: Path) -> list[Path]:
    synthetic = write_series(
        folder, "find-many", "find-many-series", MANY, size=8, patient="MANY^SLICES"
    )
    return [
        *sorted(SAMPLES.glob("*.dcm")),
        *(Path(get_testdata_file(name)) for name in PYDICOM_FILES),
        *(Path(get_charset_files(name)[0]) for name in CHARSET_FILES),
        *synthetic,
    ]


def stow(server: LiveServer, paths: list[Path]) -> None:
    body, content_type = multipart([path.read_bytes() for path in paths])
    headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
    reply = request(f"{server.url}/studies", method="POST", data=body, headers=headers)
    assert reply.status == 200, reply.text


@pytest.fixture(scope="module")
def stocked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stocked]:
    root = tmp_path_factory.mktemp("find")
    dicom_port = free_port()
    server = LiveServer(root / "archive", free_port(), extra_args=("--dicom-port", str(dicom_port)))
    paths = stored_files(root / "synthetic")
    server.start()
    try:
        stow(server, paths)
        originals = [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]
        yield Stocked(server, dicom_port, originals, originals[-1].StudyInstanceUID)
    finally:
        server.stop()


def findscu(port: int, model: str, *keys: str) -> list[Dataset]:
    """dcmtk's findscu with ``-k`` keys; its responses as pydicom reads their files."""
    with tempfile.TemporaryDirectory() as folder:
        command = [FINDSCU, model, "-X", "-od", folder, "-aec", AE_TITLE]
        command += [argument for key in keys for argument in ("-k", key)]
        done = subprocess.run(
            [*command, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return [pydicom.dcmread(path) for path in sorted(Path(folder).glob("rsp*.dcm"))]


def keywords(response: Dataset) -> set[str]:
    return {element.keyword for element in response}


def study_keys(*keys: str) -> list[str]:
    return ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", *keys]


# findscu, Study Root ---------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["compressed*", "COMPRESSEDSAMPLES^??1", "*samples^m*"])
def test_patient_name_wildcards_match_case_insensitively_c2224(stocked, pattern) -> None:
    """PS3.4 C.2.2.2.4: * and ? wildcards; PN matching ignores case (C.2.2.2.1)."""
    keys = study_keys(f"PatientName={pattern}", "StudyDate", "PatientID")
    responses = findscu(stocked.dicom_port, "-S", *keys)
    regex = pattern.lower().replace("^", r"\^").replace("*", ".*").replace("?", ".")
    expected = {
        uid: files[0]
        for uid, files in stocked.studies().items()
        if re.fullmatch(regex, str(files[0].get("PatientName", "")).lower())
    }
    assert expected and {r.StudyInstanceUID for r in responses} == set(expected)
    for response in responses:
        original = expected[response.StudyInstanceUID]
        assert str(response.PatientName) == str(original.PatientName)
        assert (response.StudyDate, response.PatientID) == (original.StudyDate, original.PatientID)
        assert keywords(response) == OWN_KEYWORDS | {
            "StudyInstanceUID",
            "PatientName",
            "StudyDate",
            "PatientID",
        }
        assert (response.QueryRetrieveLevel, response.RetrieveAETitle) == ("STUDY", AE_TITLE)


def test_universal_patient_name_matches_every_study_c2223(stocked) -> None:
    responses = findscu(stocked.dicom_port, "-S", *study_keys("PatientName=*"))
    assert sorted(r.StudyInstanceUID for r in responses) == sorted(stocked.studies())
    assert len(responses) == len(stocked.studies())


@pytest.mark.parametrize("dates", ["20040101-20041231", "-20031231", "20170101-", "20040826"])
def test_study_date_ranges_c2225(stocked, dates) -> None:
    """PS3.4 C.2.2.2.5: closed and open ranges, and a single date."""
    responses = findscu(stocked.dicom_port, "-S", *study_keys(f"StudyDate={dates}"))
    low, dash, high = dates.partition("-")
    expected = {
        uid
        for uid, files in stocked.studies().items()
        if (date := files[0].get("StudyDate"))
        and (date == low if not dash else (low or "0") <= date <= (high or "9"))
    }
    assert expected and {r.StudyInstanceUID for r in responses} == expected
    for response in responses:
        assert response.StudyDate == stocked.studies()[response.StudyInstanceUID][0].StudyDate


def test_modalities_in_study_and_study_counts_are_computed(stocked) -> None:
    keys = study_keys("ModalitiesInStudy", "NumberOfStudyRelatedSeries")
    responses = findscu(stocked.dicom_port, "-S", *keys, "NumberOfStudyRelatedInstances")
    assert len(responses) == len(stocked.studies())
    for response in responses:
        files = stocked.studies()[response.StudyInstanceUID]
        modalities = response.ModalitiesInStudy
        modalities = [modalities] if isinstance(modalities, str) else list(modalities)
        assert modalities == sorted({ds.Modality for ds in files})
        assert response.NumberOfStudyRelatedSeries == len({ds.SeriesInstanceUID for ds in files})
        assert response.NumberOfStudyRelatedInstances == len(files)


def test_modalities_in_study_matches_a_study_with_that_modality(stocked) -> None:
    responses = findscu(stocked.dicom_port, "-S", *study_keys("ModalitiesInStudy=MR"))
    expected = {
        uid for uid, files in stocked.studies().items() if any(ds.Modality == "MR" for ds in files)
    }
    assert expected and {r.StudyInstanceUID for r in responses} == expected


def test_uid_lists_match_any_of_their_uids_c2222(stocked) -> None:
    ct, mr = (pydicom.dcmread(get_testdata_file(name)) for name in ("CT_small.dcm", "MR_small.dcm"))
    wanted = f"{ct.StudyInstanceUID}\\{mr.StudyInstanceUID}"
    responses = findscu(stocked.dicom_port, "-S", "QueryRetrieveLevel=STUDY", f"0020,000D={wanted}")
    assert sorted(r.StudyInstanceUID for r in responses) == sorted(wanted.split("\\"))
    both_series = f"{SERIES_CIRCLE}\\{SERIES_SQUARE_TRIANGLE}"
    keys = ["QueryRetrieveLevel=SERIES", f"SeriesInstanceUID={both_series}"]
    responses = findscu(stocked.dicom_port, "-S", *keys)
    assert sorted(r.SeriesInstanceUID for r in responses) == sorted(both_series.split("\\"))


def test_series_level_in_a_study(stocked) -> None:
    keys = [
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={STUDY_UID}",
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
    ]
    responses = findscu(stocked.dicom_port, "-S", *keys)
    files = stocked.studies()[STUDY_UID]
    assert sorted(r.SeriesInstanceUID for r in responses) == sorted(
        {ds.SeriesInstanceUID for ds in files}
    )
    for response in responses:
        in_series = [ds for ds in files if ds.SeriesInstanceUID == response.SeriesInstanceUID]
        assert response.NumberOfSeriesRelatedInstances == len(in_series)
        assert (response.Modality, response.SeriesNumber) == (
            in_series[0].Modality,
            in_series[0].SeriesNumber,
        )


def test_image_level_with_study_and_series_uids(stocked) -> None:
    keys = [
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={STUDY_UID}",
        f"SeriesInstanceUID={SERIES_SQUARE_TRIANGLE}",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
        "Rows",
        "Columns",
    ]
    responses = findscu(stocked.dicom_port, "-S", *keys)
    expected = [ds for ds in stocked.originals if ds.SeriesInstanceUID == SERIES_SQUARE_TRIANGLE]
    assert sorted(r.SOPInstanceUID for r in responses) == sorted(
        ds.SOPInstanceUID for ds in expected
    )
    for response in responses:
        original = stocked.original(response.SOPInstanceUID)
        for keyword in ("SOPClassUID", "InstanceNumber", "Rows", "Columns"):
            assert response[keyword].value == original[keyword].value, keyword
        assert response.QueryRetrieveLevel == "IMAGE"


def test_keys_memory_does_not_hold_come_from_the_sidecars(stocked) -> None:
    """Return keys beyond the index's: from the stored instance; absent ones zero-length."""
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    keys = study_keys("PatientWeight", "AdditionalPatientHistory", "PatientComments")
    keys[1] = f"StudyInstanceUID={ct.StudyInstanceUID}"
    (study,) = findscu(stocked.dicom_port, "-S", *keys, "OtherPatientIDsSequence")
    assert study.PatientWeight == ct.PatientWeight
    assert study.AdditionalPatientHistory == ct.AdditionalPatientHistory
    assert study.OtherPatientIDsSequence[0].PatientID == ct.OtherPatientIDsSequence[0].PatientID
    assert "PatientComments" not in ct and study["PatientComments"].is_empty
    keys = ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={ct.StudyInstanceUID}"]
    keys += ["ImagePositionPatient", "PhotometricInterpretation", "SliceLocation"]
    (image,) = findscu(stocked.dicom_port, "-S", *keys)
    assert list(image.ImagePositionPatient) == list(ct.ImagePositionPatient)
    assert image.PhotometricInterpretation == ct.PhotometricInterpretation
    assert image.SliceLocation == ct.SliceLocation


def test_a_key_the_index_cannot_match_is_returned_not_matched_c2212(stocked) -> None:
    """PS3.4 C.2.2.1.2: an SCP need not match on optional keys; the stored value comes back."""
    keys = ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={STUDY_UID}"]
    responses = findscu(stocked.dicom_port, "-S", *keys, "PhotometricInterpretation=MONOCHROME2")
    assert len(responses) == len(stocked.studies()[STUDY_UID])
    assert {r.PhotometricInterpretation for r in responses} == {"RGB"}


# findscu, Patient Root -------------------------------------------------------------------


def test_patient_level_answers_one_identifier_per_patient(stocked) -> None:
    """Two patients share PatientID ID1 (the samples and SC_rgb.dcm) with different names."""
    keys = ["QueryRetrieveLevel=PATIENT", "PatientID=ID1", "PatientName"]
    keys += [f"NumberOfPatientRelated{what}" for what in ("Studies", "Series", "Instances")]
    responses = findscu(stocked.dicom_port, "-P", *keys)
    patients: dict[str, list[Dataset]] = defaultdict(list)
    for ds in stocked.originals:
        if ds.PatientID == "ID1":
            patients[str(ds.PatientName)].append(ds)
    assert len(patients) == 2
    assert sorted(str(r.PatientName) for r in responses) == sorted(patients)
    for response in responses:
        files = patients[str(response.PatientName)]
        assert response.PatientID == "ID1" and response.QueryRetrieveLevel == "PATIENT"
        assert response.NumberOfPatientRelatedStudies == len({ds.StudyInstanceUID for ds in files})
        assert response.NumberOfPatientRelatedSeries == len({ds.SeriesInstanceUID for ds in files})
        assert response.NumberOfPatientRelatedInstances == len(files)


def test_patient_level_universal_lists_every_patient(stocked) -> None:
    responses = findscu(stocked.dicom_port, "-P", "QueryRetrieveLevel=PATIENT", "PatientID")
    assert len(responses) == len(
        {(ds.get("PatientID"), str(ds.get("PatientName"))) for ds in stocked.originals}
    )


def test_patient_root_study_and_image_levels(stocked) -> None:
    keys = ["QueryRetrieveLevel=STUDY", "PatientID=ID1", "StudyInstanceUID", "StudyDate"]
    responses = findscu(stocked.dicom_port, "-P", *keys)
    expected = {
        ds.StudyInstanceUID: ds.StudyDate for ds in stocked.originals if ds.PatientID == "ID1"
    }
    assert {r.StudyInstanceUID: r.StudyDate for r in responses} == expected
    keys = ["QueryRetrieveLevel=IMAGE", "PatientID=ID1", f"StudyInstanceUID={STUDY_UID}"]
    responses = findscu(stocked.dicom_port, "-P", *keys, f"SeriesInstanceUID={SERIES_CIRCLE}")
    assert [r.SeriesInstanceUID for r in responses] == [SERIES_CIRCLE]


# pynetdicom ------------------------------------------------------------------------------


def pynetdicom_find(
    port: int, identifier: Dataset, model=StudyRootQueryRetrieveInformationModelFind
):
    """Every (status, identifier) pynetdicom receives for one C-FIND."""
    ae = AE("FINDTEST")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        return list(assoc.send_c_find(identifier, model))
    finally:
        assoc.release()


def test_c_cancel_stops_the_answer_with_a_cancel_status(stocked) -> None:
    """PS3.7 9.3.2.3: after a C-CANCEL the SCP stops sending matches and answers Cancel."""
    ae = AE("FINDTEST")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", stocked.dicom_port, ae_title=AE_TITLE)
    query = identifier("IMAGE", StudyInstanceUID=stocked.synthetic_study, SOPInstanceUID="")
    query.ImagePositionPatient = None  # a sidecar read per match: more for the cancel to stop
    statuses = []
    try:
        for status, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind, 1):
            statuses.append(status.Status)
            if len(statuses) == 1:
                assoc.send_c_cancel(1, query_model=StudyRootQueryRetrieveInformationModelFind)
    finally:
        assoc.release()
    assert statuses[0] == 0xFF00 and statuses[-1] == 0xFE00
    assert set(statuses[:-1]) == {0xFF00} and len(statuses) - 1 < MANY


@pytest.mark.parametrize(
    ("level", "model"),
    [
        ("FOO", StudyRootQueryRetrieveInformationModelFind),
        (None, StudyRootQueryRetrieveInformationModelFind),
        ("PATIENT", StudyRootQueryRetrieveInformationModelFind),
        ("WORKLIST", PatientRootQueryRetrieveInformationModelFind),
    ],
)
def test_a_level_the_model_has_not_is_refused_a900(stocked, level, model) -> None:
    """PS3.4 C.4.1.1.4 (Table C.4-1): Identifier does not match SOP Class."""
    ((status, found),) = pynetdicom_find(
        stocked.dicom_port, identifier(level, PatientName=""), model
    )
    assert status.Status == 0xA900 and found is None
    assert "QueryRetrieveLevel" in status.ErrorComment
    assert status.OffendingElement == 0x00080052


def test_a_value_that_cannot_be_understood_is_refused_c000(stocked) -> None:
    ((status, found),) = pynetdicom_find(stocked.dicom_port, identifier("STUDY", StudyDate="2004"))
    assert status.Status == 0xC000 and found is None and "StudyDate" in status.ErrorComment


def test_unicode_names_in_and_out(stocked) -> None:
    """Queries in ISO_IR 192 match any component group of names stored in other character
    sets; the answers carry them in ISO_IR 192 (PS3.5 6.1.2.3, PS3.4 C.4.1.1.3.2)."""
    russian, japanese = (pydicom.dcmread(get_charset_files(name)[0]) for name in CHARSET_FILES)
    for pattern, original in (
        ("ЛЮК*", russian),
        ("山田^太郎", japanese),
        ("yamada*", japanese),
    ):
        query = identifier("STUDY", SpecificCharacterSet="ISO_IR 192", PatientName=pattern)
        *pending, (final, _) = pynetdicom_find(stocked.dicom_port, query)
        assert final.Status == 0 and len(pending) == 1, pattern
        found = pending[0][1]
        assert found.SpecificCharacterSet == "ISO_IR 192"
        assert str(found.PatientName) == str(original.PatientName)


def test_what_stow_rs_stores_is_found_at_once(tmp_path) -> None:
    dicom_port = free_port()
    server = LiveServer(
        tmp_path / "archive", free_port(), extra_args=("--dicom-port", str(dicom_port))
    )
    path = Path(get_testdata_file("rtdose.dcm"))
    original = pydicom.dcmread(path, stop_before_pixels=True)
    keys = ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={original.StudyInstanceUID}"]
    keys.append("Modality")
    server.start()
    try:
        assert findscu(dicom_port, "-S", *keys) == []
        stow(server, [path])
        (found,) = findscu(dicom_port, "-S", *keys)
    finally:
        server.stop()
    assert (found.StudyInstanceUID, found.Modality) == (original.StudyInstanceUID, "RTDOSE")


# the handler in process: cancel and deletion at chosen points ------------------------------


class FakeAssociation:
    """What the handler uses of an Association: it records each response, and lets a test
    act after one (a C-CANCEL arriving, an instance deleted) before the next is built."""

    def __init__(self, node: Node, after_response=None) -> None:
        self.node = node
        self.caller = "TEST@here"
        self.cancelled: set[int] = set()
        self.responses: list[tuple[int, Dataset | None, Dataset | None]] = []
        self.after_response = after_response

    async def respond(self, request, status, *, details=None, identifier=None, **fields):
        found = None if identifier is None else Dataset.from_json(identifier)
        self.responses.append((status, found, details))
        if self.after_response is not None:
            await self.after_response(self)

    def found(self) -> list[str]:
        return [found.SOPInstanceUID for status, found, _ in self.responses if status == 0xFF00]


def find_request(data: bytes) -> Message:
    command = {"AffectedSOPClassUID": StudyRootQueryRetrieveInformationModelFind}
    command.update(CommandField=0x0020, MessageID=1, CommandDataSetType=0)
    context = build_context(StudyRootQueryRetrieveInformationModelFind, ImplicitVRLittleEndian)
    return Message(context, command, data)


def image_query() -> Message:
    query = identifier("IMAGE", StudyInstanceUID=STUDY_UID, SOPInstanceUID="")
    return find_request(encode(query, True, True))


@pytest.fixture
def node(tmp_path: Path) -> Node:
    """A Catalog holding the samples (each test runs the handler on a loop of its own)."""

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        yield data

    async def stocked() -> Catalog:
        catalog = Catalog(Archive(tmp_path / "archive", fsync=False), prepare=prepare_here)
        await catalog.open()
        for path in sorted(SAMPLES.glob("*.dcm")):
            await catalog.store(chunks(path.read_bytes()))
        return catalog

    return Node(asyncio.run(stocked()), workers=None, ae_title=AE_TITLE, peers={})


def test_the_handler_stops_at_the_first_match_after_a_cancel(node) -> None:
    async def cancel(association: FakeAssociation) -> None:
        association.cancelled.add(1)

    association = FakeAssociation(node, after_response=cancel)
    asyncio.run(handle_find(association, image_query()))
    (first_status, first, _), (last_status, none, _) = association.responses
    assert first_status == 0xFF00 and first.SOPInstanceUID in SAMPLE_SOPS
    assert (last_status, none) == (0xFE00, None)


def test_a_match_deleted_while_answering_is_left_out(node, monkeypatch) -> None:
    monkeypatch.setattr(find, "BATCH", 1)  # each match looked up just before it is sent
    everything = FakeAssociation(node)
    asyncio.run(handle_find(everything, image_query()))
    assert sorted(everything.found()) == sorted(SAMPLE_SOPS)
    last = everything.found()[-1]

    async def delete_the_last(association: FakeAssociation) -> None:
        if len(association.responses) == 1:
            record = next(r for r in node.catalog.instances_of(STUDY_UID) if r.sop == last)
            assert await node.catalog.delete_instance(record.study, record.series, last)

    association = FakeAssociation(node, after_response=delete_the_last)
    asyncio.run(handle_find(association, image_query()))
    assert association.found() == everything.found()[:-1]
    assert association.responses[-1][0] == 0x0000


def test_an_identifier_that_cannot_be_decoded_is_refused_c000(node) -> None:
    """Rows (US) with 3 bytes: pydicom cannot decode it (PS3.5 6.2: US is 2 bytes a value)."""
    raw = struct.pack("<HHI", 0x0008, 0x0052, 6) + b"STUDY "
    raw += struct.pack("<HHI", 0x0028, 0x0010, 3) + b"\x01\x02\x03"
    association = FakeAssociation(node)
    asyncio.run(handle_find(association, find_request(raw)))
    ((status, found, details),) = association.responses
    assert status == 0xC000 and found is None
    assert "cannot be decoded" in details.ErrorComment
