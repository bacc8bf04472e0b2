"""The in-memory index on its own: what its remembered orders and lookup plans must not get
wrong when the archive changes, checked against pydicom's reading of the files."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from localdicom.archive import StoredInstance
from localdicom.dicom.describing import describe
from localdicom.dicom.qido import parse_query
from localdicom.index import Index
from tests.helpers import SAMPLES


def stored(path: Path) -> StoredInstance:
    with path.open("rb") as fp:
        return StoredInstance(describe(fp), path.stat().st_size, "00" * 32)


@pytest.fixture
def one_study(tmp_path: Path) -> list[Path]:
    """Three series of one study, numbered 3, 1 and 2, one instance each."""
    template = pydicom.dcmread(SAMPLES / "green-square.dcm")
    paths = []
    for number in (3, 1, 2):
        template.SeriesInstanceUID = f"1.2.3.{number}"
        template.SOPInstanceUID = f"1.2.3.{number}.1"
        template.SeriesNumber = number
        template.Modality = "MR" if number == 2 else "CT"
        path = tmp_path / f"{number}.dcm"
        template.save_as(path)
        paths.append(path)
    return paths


def series_found(index: Index, study: str, **conditions: str) -> list[str]:
    return [s.uid for s in index.search(parse_query(conditions.items(), "series"), study)]


def test_series_order_follows_series_added_and_removed(one_study: list[Path]) -> None:
    index = Index()
    index.add(stored(one_study[0]))
    study = index.add(stored(one_study[1])).study
    assert series_found(index, study) == ["1.2.3.1", "1.2.3.3"]
    index.add(stored(one_study[2]))  # after the order was asked for once
    assert series_found(index, study) == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    index.remove_series("1.2.3.1")
    assert series_found(index, study) == ["1.2.3.2", "1.2.3.3"]
    assert series_found(index, study, Modality="MR") == ["1.2.3.2"]


def test_attributes_are_those_of_the_files_and_the_counts(one_study: list[Path]) -> None:
    index = Index()
    records = [index.add(stored(path)) for path in one_study]
    tags = ("00080018", "00080060", "00100010", "0020000D", "00201208", "00201209", "7FE00010")
    for path, record in zip(one_study, records, strict=True):
        original = pydicom.dcmread(path)
        attributes = index.attributes(record, tags)
        assert attributes["00080018"]["Value"] == [original.SOPInstanceUID]
        assert attributes["00080060"]["Value"] == [original.Modality]
        assert attributes["00100010"]["Value"] == [{"Alphabetic": str(original.PatientName)}]
        assert attributes["0020000D"]["Value"] == [original.StudyInstanceUID]
        assert attributes["00201208"]["Value"] == [len(one_study)]  # instances in the study
        assert attributes["00201209"]["Value"] == [1]  # instances in the series
        assert "7FE00010" not in attributes  # not held in memory


def test_a_study_record_gives_no_series_or_instance_attributes(one_study: list[Path]) -> None:
    index = Index()
    study = index.studies[index.add(stored(one_study[0])).study]
    assert set(index.attributes(study, ("00080018", "00080060", "0020000D"))) == {"0020000D"}


def test_exact_patient_id_search_follows_studies_added_and_removed(tmp_path: Path) -> None:
    template = pydicom.dcmread(SAMPLES / "green-square.dcm")
    index = Index()

    def add(study: str, patient_id: str, date: str) -> None:
        template.StudyInstanceUID, template.PatientID, template.StudyDate = study, patient_id, date
        template.SeriesInstanceUID, template.SOPInstanceUID = f"{study}.1", f"{study}.1.1"
        path = tmp_path / f"{study}.dcm"
        template.save_as(path)
        index.add(stored(path))

    def found(**conditions: str) -> list[str]:
        return [s.uid for s in index.search(parse_query(conditions.items(), "study"))]

    add("1.2.9", "ANON", "20200101")
    assert found(PatientID="ANON") == ["1.2.9"]
    assert found(PatientID="anon") == []  # LO: case matters
    add("1.2.8", "ANON", "20100101")  # an earlier study of the same patient, added later
    add("1.2.7", "OTHER", "20150101")
    assert found(PatientID="ANON") == ["1.2.8", "1.2.9"]
    assert found(PatientID="ANON", StudyDate="20150101-") == ["1.2.9"]
    index.remove_study("1.2.8")
    assert found(PatientID="ANON") == ["1.2.9"]
    assert found(PatientID="OTHER") == ["1.2.7"]
