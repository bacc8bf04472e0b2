"""A DICOMDIR for a set of stored instances, written from their DICOM JSON alone.

pydicom's ``FileSet`` writes DICOMDIRs, but from instances on disk, which it copies into a
staging folder; here the instances stream into a zip (or a folder) one by one and the
DICOMDIR is made from what their sidecars say, without reading them again. pydicom still
decides what goes into each record: its ``DIRECTORY_RECORDERS`` (one per record type of
PS3.3 F.5) are applied to a dataset of the instance's small attributes.

The layout is that of the General Purpose CD-R profile (PS3.11 D, PS3.10 8.2): the DICOMDIR
at the root, and each instance in a File ID of at most 8 components of at most 8 characters
from A-Z, 0-9 and _: ``DICOM/ST000001/SE000001/IM000001``.

Type 1 keys of the PATIENT, STUDY, SERIES and IMAGE records (PS3.3 F.5.1-F.5.4) that an
instance leaves empty (many do: Study ID and Instance Number are Type 2 in the images'
IODs) are invented, as dcmtk's ``dcmmkdir --invent`` does: Patient ID ``UNKNOWN``, Study
Date ``19000101`` unless the instance has a Series, Acquisition or Content Date, Study Time
``000000``, Study ID, Series Number and Instance Number (of every leaf record) the place of
the study, series or instance in the file set, Modality ``OT``.

``_four_level_record_type`` is pydicom's own choice of leaf record type by SOP class and
content (PS3.3 F.5); it is private, and pydicom is pinned below 4.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from itertools import accumulate
from typing import Any

from pydicom import dcmwrite
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import DIRECTORY_RECORDERS, _four_level_record_type
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

#: Media Storage Directory Storage (PS3.4 Annex I, PS3.10 7.2).
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
FOLDER = "DICOM"
#: Sequences the record types of PS3.3 F.5 copy from the instance (pydicom's recorders).
RECORDED_SEQUENCES = frozenset(
    {
        "ConceptNameCodeSequence",
        "ContentSequence",
        "ReferencedSeriesSequence",
        "BlendingSequence",
        "ReferencedImageEvidenceSequence",
        "HangingProtocolDefinitionSequence",
        "HangingProtocolUserIdentificationCodeSequence",
        "ProcedureTypeCodeSequence",
    }
)
_ITEM_TAG = b"\xfe\xff\x00\xe0"


def file_id(study: int, series: int, instance: int) -> tuple[str, ...]:
    """The File ID (PS3.10 8.5) of the ``instance``-th instance of the ``series``-th series
    of the ``study``-th study, each counted from 1."""
    return (FOLDER, f"ST{study:06d}", f"SE{series:06d}", f"IM{instance:06d}")


class NotRecorded(ValueError):
    """The instance lacks what its directory record type requires (PS3.3 F.5)."""


@dataclass
class _Node:
    record: Dataset
    children: dict[str, _Node] = field(default_factory=dict)


@dataclass
class DicomDir:
    """The Basic Directory IOD (PS3.3 F.3) of the instances added, PATIENT / STUDY / SERIES
    / leaf records (the four-level hierarchy of PS3.3 F.4)."""

    file_set_id: str = "LOCALDICOM"
    _patients: dict[str, _Node] = field(default_factory=dict)
    _sops: list[str] = field(default_factory=list)

    def add(self, file_ids: Sequence[str], metadata: dict[str, Any], syntax: str) -> None:
        """Record the instance whose DICOM JSON is ``metadata``, stored in the file set at
        ``file_ids`` in the transfer syntax ``syntax``; NotRecorded if it cannot be."""
        ds = instance_dataset(metadata)
        key = _patient_key(ds)
        if key not in self._patients:
            self._patients[key] = _Node(_record("PATIENT", ds))
        patient = self._patients[key]
        study = _child(patient, ds.StudyInstanceUID, lambda: _study_record(ds, patient))
        series = _child(study, ds.SeriesInstanceUID, lambda: _series_record(ds, study))
        leaf_type = _four_level_record_type(ds)
        if not _filled(ds, "InstanceNumber"):
            ds.InstanceNumber = len(series.children) + 1
        try:
            leaf = _record(leaf_type, ds)
        except (ValueError, KeyError, AttributeError) as exc:
            raise NotRecorded(f"no {leaf_type} directory record: {exc}") from None
        leaf.ReferencedFileID = list(file_ids)
        leaf.ReferencedSOPClassUIDInFile = ds.SOPClassUID
        leaf.ReferencedSOPInstanceUIDInFile = ds.SOPInstanceUID
        leaf.ReferencedTransferSyntaxUIDInFile = syntax
        series.children[ds.SOPInstanceUID] = _Node(leaf)
        self._sops.append(ds.SOPInstanceUID)

    def encode(self) -> bytes:
        """The DICOMDIR file (PS3.10 7, Explicit VR Little Endian), its offsets counted from
        the first byte of the file (PS3.3 Table F.3-3)."""
        records = list(_depth_first(list(self._patients.values())))
        sizes = [len(_encoded_item(node.record)) for node in records]
        # the records follow the sequence's header, the last thing before them
        first = len(_encoded_file(self._directory([])))
        starts = accumulate(sizes, initial=first)  # one more than there are records
        offsets = {id(node): start for node, start in zip(records, starts, strict=False)}
        ds = self._directory([node.record for node in records])
        _link(list(self._patients.values()), offsets)
        roots = list(self._patients.values())
        if roots:
            ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = offsets[id(roots[0])]
            ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = offsets[id(roots[-1])]
        data = _encoded_file(ds)
        if any(data[offset : offset + 4] != _ITEM_TAG for offset in offsets.values()):
            raise AssertionError("a directory record is not where its offset says")
        return data

    def _directory(self, records: list[Dataset]) -> Dataset:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MEDIA_STORAGE_DIRECTORY
        # the same instances give the same DICOMDIR, byte for byte
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=self._sops or [""])
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.FileSetID = self.file_set_id
        ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
        ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
        ds.FileSetConsistencyFlag = 0
        ds.DirectoryRecordSequence = records
        return ds


def instance_dataset(metadata: dict[str, Any]) -> Dataset:
    """The attributes of a DICOM JSON object (PS3.18 F.2) a directory record may take: no
    bulk data, and of the sequences only those of :data:`RECORDED_SEQUENCES`."""
    kept = {
        tag: element
        for tag, element in metadata.items()
        if "BulkDataURI" not in element
        and not tag.startswith("7FE0")
        and (element.get("vr") != "SQ" or keyword_for_tag(int(tag, 16)) in RECORDED_SEQUENCES)
    }
    with warnings.catch_warnings():  # a stored value pydicom finds odd: kept as it is
        warnings.simplefilter("ignore", UserWarning)
        return Dataset.from_json(kept)


def _filled(ds: Dataset, keyword: str) -> bool:
    return keyword in ds and ds[keyword].VM > 0


def _patient_key(ds: Dataset) -> str:
    if not _filled(ds, "PatientID"):
        ds.PatientID = "UNKNOWN"
    return f"{ds.PatientID}\\{ds.get('PatientName', '')}"


def _child(parent: _Node, uid: str, make: Any) -> _Node:
    if uid not in parent.children:
        parent.children[uid] = _Node(make())
    return parent.children[uid]


def _study_record(ds: Dataset, patient: _Node) -> Dataset:
    if not _filled(ds, "StudyDate"):
        dates = [ds.get(name) for name in ("SeriesDate", "AcquisitionDate", "ContentDate")]
        ds.StudyDate = next((date for date in dates if date), "19000101")
    if not _filled(ds, "StudyTime"):
        ds.StudyTime = "000000"
    if not _filled(ds, "StudyID"):
        ds.StudyID = str(len(patient.children) + 1)
    return _record("STUDY", ds)


def _series_record(ds: Dataset, study: _Node) -> Dataset:
    if not _filled(ds, "Modality"):
        ds.Modality = "OT"
    if not _filled(ds, "SeriesNumber"):
        ds.SeriesNumber = len(study.children) + 1
    return _record("SERIES", ds)


def _record(kind: str, ds: Dataset) -> Dataset:
    """A directory record of type ``kind`` (PS3.3 Table F.3-3), its offsets still 0."""
    record = Dataset()
    record.OffsetOfTheNextDirectoryRecord = 0
    record.RecordInUseFlag = 0xFFFF
    record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    record.DirectoryRecordType = kind
    if "SpecificCharacterSet" in ds:
        record.SpecificCharacterSet = ds.SpecificCharacterSet
    record.update(DIRECTORY_RECORDERS[kind](ds))
    return record


def _depth_first(nodes: list[_Node]) -> Any:
    for node in nodes:
        yield node
        yield from _depth_first(list(node.children.values()))


def _link(siblings: list[_Node], offsets: dict[int, int]) -> None:
    """Chain each entity's records (PS3.3 F.3.2.1: next record, 0 for the last) and point
    each record at its first child (lower-level entity, 0 for none)."""
    for place, node in enumerate(siblings):
        following = siblings[place + 1] if place + 1 < len(siblings) else None
        node.record.OffsetOfTheNextDirectoryRecord = offsets[id(following)] if following else 0
        children = list(node.children.values())
        node.record.OffsetOfReferencedLowerLevelDirectoryEntity = (
            offsets[id(children[0])] if children else 0
        )
        _link(children, offsets)


def _encoded_file(ds: Dataset) -> bytes:
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _encoded_item(record: Dataset) -> bytes:
    """A record as an item of the Directory Record Sequence (defined length, explicit VR
    little endian: as pydicom writes it inside the DICOMDIR)."""
    holder = Dataset()
    holder.DirectoryRecordSequence = [record]
    buffer = BytesIO()
    dcmwrite(buffer, holder, implicit_vr=False, little_endian=True)
    # the sequence element's header: tag 4, VR 2, reserved 2, length 4
    return buffer.getvalue()[12:]
