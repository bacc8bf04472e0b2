"""A study to de-identify: pydicom-data's liver segmentation and the CT series it segments."""

from __future__ import annotations

import pydicom
from pydicom.dataset import Dataset

from tests.helpers.corpus import pydicom_file


def liver_study() -> list[Dataset]:
    """pydicom-data's liver SEG (liver_1frame.dcm) and three CT slices (CT_small.dcm's
    content) carrying the UIDs it references: the same study, series, frame of reference,
    patient and study date."""
    seg = pydicom.dcmread(pydicom_file("liver_1frame.dcm"))
    referenced = seg.ReferencedSeriesSequence[0]
    slices = []
    for item in referenced.ReferencedInstanceSequence:
        ct = pydicom.dcmread(pydicom_file("CT_small.dcm"))
        ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = item.ReferencedSOPInstanceUID
        ct.SeriesInstanceUID = referenced.SeriesInstanceUID
        ct.StudyInstanceUID, ct.FrameOfReferenceUID = seg.StudyInstanceUID, seg.FrameOfReferenceUID
        ct.PatientID, ct.PatientName = seg.PatientID, seg.PatientName
        ct.StudyDate = seg.StudyDate
        slices.append(ct)
    return [seg, *slices]
