"""The selection every data-moving command shares (localdicom/selection.py): its QIDO-RS
searches for a remote, and its reading of a local archive from the sidecars alone."""

from __future__ import annotations

from pathlib import Path

import click
import pydicom
import pytest

from localdicom.importer import run_import
from localdicom.selection import Selection, local_instances, selection_from
from tests.helpers import SAMPLES, SERIES_CIRCLE, STUDY_UID
from tests.helpers.corpus import pydicom_file

CT, MR = pydicom_file("CT_small.dcm"), pydicom_file("MR_small.dcm")


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    report = run_import([SAMPLES, CT, MR], root)
    assert report.exit_code == 0
    return root


def originals() -> list[pydicom.Dataset]:
    return [pydicom.dcmread(path) for path in [*sorted(SAMPLES.glob("*.dcm")), CT, MR]]


def selected(archive: Path, selection: Selection) -> set[str]:
    return {stored.header.sop_uid for _, stored in local_instances(archive, selection)}


def expected(predicate) -> set[str]:
    return {ds.SOPInstanceUID for ds in originals() if predicate(ds)}


def test_all_selects_every_instance(archive):
    assert selected(archive, Selection(everything=True)) == expected(lambda ds: True)


def test_study_and_series_each_select_and_queries_narrow(archive):
    ct = pydicom.dcmread(CT)
    chosen = Selection(studies=(ct.StudyInstanceUID,), series=(SERIES_CIRCLE,))
    assert selected(archive, chosen) == expected(
        lambda ds: (
            ds.StudyInstanceUID == ct.StudyInstanceUID or ds.SeriesInstanceUID == SERIES_CIRCLE
        )
    )
    narrowed = Selection(studies=(STUDY_UID,), queries=(("SOPInstanceUID", ct.SOPInstanceUID),))
    assert selected(archive, narrowed) == set()


def test_queries_match_as_qido_does(archive):
    """Wildcards and ranges as PS3.18 8.3.4.6 defines them, on any attribute of the sidecar."""
    mr = pydicom.dcmread(MR)
    assert selected(archive, Selection(queries=(("Modality", "MR"),))) == expected(
        lambda ds: ds.Modality == "MR"
    )
    name = str(mr.PatientName)[:3] + "*"
    assert selected(archive, Selection(queries=(("PatientName", name),))) == expected(
        lambda ds: str(ds.PatientName).startswith(name[:-1])
    )
    dates = Selection(queries=(("StudyDate", f"-{mr.StudyDate}"),))
    assert selected(archive, dates) == expected(lambda ds: ds.get("StudyDate", "") <= mr.StudyDate)


def test_searches_use_the_highest_level_that_knows_every_key():
    assert Selection(queries=(("PatientID", "1"),)).searches() == [("study", [("PatientID", "1")])]
    assert Selection(queries=(("Modality", "SEG"),)).searches()[0][0] == "series"
    assert Selection(queries=(("InstanceNumber", "1"),)).searches()[0][0] == "instance"
    named = Selection(studies=("1.2",), series=("1.3",), queries=(("Modality", "CT"),))
    assert named.searches() == [
        ("study", [("StudyInstanceUID", "1.2"), ("Modality", "CT")]),
        ("series", [("SeriesInstanceUID", "1.3"), ("Modality", "CT")]),
    ]


@pytest.mark.parametrize(
    "studies, queries, everything, message",
    [
        ((), (), False, "give --all"),
        (("1.2",), (), True, "give --all"),
        (("1.02",), (), False, "--study '1.02' is not a valid DICOM UID"),
        ((), (("NoSuchKeyword", "1"),), False, "NoSuchKeyword"),
        ((), (("StudyDate", "2024-01-01"),), False, "StudyDate"),
    ],
)
def test_a_wrong_selection_is_a_usage_error_naming_it(studies, queries, everything, message):
    with pytest.raises(click.UsageError, match=message):
        selection_from(studies, (), queries, everything)
