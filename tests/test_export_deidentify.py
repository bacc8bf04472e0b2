"""``localdicom export --deidentify``: what leaves the archive carries none of the original
names, IDs or UIDs (PS3.15 Annex E Basic Profile), in its bytes, its file names and its
DICOMDIR; the SEG still points at the exported CT series; the pixel data is the stored one;
the same key gives the same files; burned-in text is listed or left out (README,
"De-identify" and "Share a study").

The archive holds the originals (imported as they are); every check compares with pydicom's
reading of the original files.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.fileset import FileSet

from localdicom import packaging
from localdicom.cli import main
from tests.test_import_deidentify import found_in, identifiers, imported, leaked

RLE_LOSSLESS = "1.2.840.10008.1.2.5"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, list[pydicom.Dataset]]:
    """An archive of the liver SEG, the three CT slices it segments and an ultrasound image,
    as they were (not de-identified), with pydicom's reading of the originals."""
    return imported(tmp_path_factory.mktemp("export-deid"))


def export(archive: Path, dest: Path, key: Path, *args: str | Path) -> tuple[int, str]:
    arguments = [archive, dest, "--all", "--deidentify", "--deid-key", key, "--workers", "2"]
    result = CliRunner().invoke(main, ["export", *map(str, [*arguments, *args])])
    return result.exit_code, result.output


def files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def unzipped(path: Path, folder: Path) -> Path:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        archive.extractall(folder)
    return folder


def assert_nothing_leaks(paths: list[Path], originals: list[pydicom.Dataset]) -> None:
    secrets = identifiers(originals)
    assert len(secrets) > 10  # names, IDs, study, series, SOP, frame of reference UIDs
    for path in paths:
        if path.name == "DICOMDIR":  # no pixel data: every byte is checked
            assert found_in(path.read_bytes(), secrets) == []
        else:
            assert leaked(path, secrets) == [], path
        assert found_in(str(path).encode(), secrets) == [], path  # its new UIDs are hashes


def pixels(datasets: list[pydicom.Dataset]) -> list[bytes]:
    return sorted(ds.PixelData for ds in datasets)


def test_export_to_a_folder_leaks_no_identifier_and_keeps_the_seg_on_its_series(
    study, tmp_path
) -> None:
    archive, originals = study
    dest, key = tmp_path / "share", tmp_path / "private" / "key.json"

    code, output = export(archive, dest, key)

    assert code == 0, output
    assert "  de-identified 5" in output and "  need review 1" in output
    paths = sorted(dest.rglob("*.dcm"))
    assert len(paths) == 5
    assert_nothing_leaks(paths, originals)
    datasets = [pydicom.dcmread(path) for path in paths]
    for path, ds in zip(paths, datasets, strict=True):  # named by the new UIDs
        assert path.relative_to(dest).parts == (
            ds.StudyInstanceUID, ds.SeriesInstanceUID, f"{ds.SOPInstanceUID}.dcm"
        )  # fmt: skip
        assert ds.PatientIdentityRemoved == "YES"
    (seg,) = [ds for ds in datasets if ds.Modality == "SEG"]
    cts = {ds.SOPInstanceUID: ds for ds in datasets if ds.Modality == "CT"}
    referenced = seg.ReferencedSeriesSequence[0]
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == (
        set(cts)
    )
    assert {ct.SeriesInstanceUID for ct in cts.values()} == {referenced.SeriesInstanceUID}
    assert pixels(datasets) == pixels(originals)  # byte for byte


def test_the_key_file_maps_every_patient_met_and_the_same_key_gives_the_same_files(
    study, tmp_path
) -> None:
    archive, originals = study
    key = tmp_path / "key.json"
    assert export(archive, tmp_path / "first", key)[0] == 0
    assert export(archive, tmp_path / "again", key)[0] == 0
    assert files(tmp_path / "first") == files(tmp_path / "again")
    patients = json.loads(key.read_text())["patients"]
    assert {entry["patient_id"] for entry in patients.values()} == {
        str(ds.PatientID) for ds in originals
    }
    other = tmp_path / "other-key.json"
    assert export(archive, tmp_path / "other", other)[0] == 0
    assert files(tmp_path / "other").keys().isdisjoint(files(tmp_path / "first"))


def test_a_zip_with_a_dicomdir_records_the_deidentified_headers(study, tmp_path) -> None:
    """PS3.3 F.5: the records carry the new UIDs and the pseudonyms, read back by pydicom's
    FileSet, and the DICOMDIR holds no original identifier either."""
    archive, originals = study
    dest = tmp_path / "cd.zip"

    code, output = export(archive, dest, tmp_path / "key.json", "--zip", "--dicomdir")

    assert code == 0, output
    root = unzipped(dest, tmp_path / "cd")
    assert_nothing_leaks(sorted(p for p in root.rglob("*") if p.is_file()), originals)
    file_set = FileSet(pydicom.dcmread(root / "DICOMDIR"))
    assert len(file_set) == 5
    for instance in file_set:
        ds = instance.load()
        assert instance.SOPInstanceUID == ds.SOPInstanceUID
        assert instance.StudyInstanceUID == ds.StudyInstanceUID
        assert instance.SeriesInstanceUID == ds.SeriesInstanceUID
        assert instance.PatientID == ds.PatientID != ""
    datasets = [instance.load() for instance in file_set]
    assert pixels(datasets) == pixels(originals)


def test_a_folder_with_a_dicomdir_and_another_transfer_syntax_has_the_original_pixels(
    study, tmp_path
) -> None:
    """RLE Lossless (PS3.5 G) decodes to the stored pixels; the SEG's 1-bit pixels cannot
    be RLE-encoded (PS3.5 8.2.2): it is listed by its SOP Instance UID in the archive, the
    rest exported."""
    archive, originals = study
    dest = tmp_path / "cd"

    code, output = export(
        archive, dest, tmp_path / "key.json", "--dicomdir", "--transfer-syntax", RLE_LOSSLESS
    )

    assert code == 1, output
    (seg,) = [ds for ds in originals if ds.Modality == "SEG"]
    assert f"error: {seg.SOPInstanceUID}: cannot be converted to {RLE_LOSSLESS}" in output
    file_set = FileSet(pydicom.dcmread(dest / "DICOMDIR"))
    assert len(file_set) == 4
    assert_nothing_leaks(sorted(p for p in dest.rglob("*") if p.is_file()), originals)
    decoded = []
    for instance in file_set:
        ds = instance.load()
        assert ds.file_meta.TransferSyntaxUID == RLE_LOSSLESS
        assert instance.ReferencedTransferSyntaxUIDInFile == RLE_LOSSLESS
        decoded.append((ds.Modality, ds.pixel_array))
    expected = [(ds.Modality, ds.pixel_array) for ds in originals if ds is not seg]
    assert len(decoded) == len(expected)
    for modality, array in expected:
        assert any(m == modality and np.array_equal(a, array) for m, a in decoded), modality


def test_reject_burned_in_leaves_the_ultrasound_out_and_lists_it(study, tmp_path) -> None:
    archive, _ = study
    dest = tmp_path / "share.zip"

    code, output = export(archive, dest, tmp_path / "key.json", "--zip", "--reject-burned-in")

    assert code == 0, output
    assert "  refused 1" in output and "refused: " in output
    assert "ultrasound" in output
    with zipfile.ZipFile(dest) as share:
        names = share.namelist()
        modalities = {pydicom.dcmread(share.open(name)).Modality for name in names}
    assert len(names) == 4 and modalities == {"CT", "SEG"}


def test_an_interrupted_export_still_records_the_patients_met(study, tmp_path, monkeypatch):
    archive, _ = study
    key = tmp_path / "key.json"
    original = packaging.FolderSink.add_bytes
    written = []

    async def add_then_interrupt(self, name, data):
        if written:
            raise KeyboardInterrupt
        written.append(name)
        await original(self, name, data)

    monkeypatch.setattr(packaging.FolderSink, "add_bytes", add_then_interrupt)
    code, output = export(archive, tmp_path / "out", key, "--workers", "1")
    assert code == 130 and "Interrupted" in output
    assert list(tmp_path.iterdir()) == [key]
    assert json.loads(key.read_text())["patients"]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("ARCHIVE/key.json", "is inside the archive"),
        ("DEST/key.json", "is inside DEST"),
        ("DEST", "is inside DEST"),
    ],
)
def test_a_key_inside_the_archive_or_dest_is_refused(study, tmp_path, key, message) -> None:
    archive, _ = study
    dest = tmp_path / "out"
    path = Path(key.replace("ARCHIVE", str(archive)).replace("DEST", str(dest)))
    before = files(archive)
    code, output = export(archive, dest, path)
    assert code == 1 and message in output
    assert not dest.exists() and files(archive) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--deidentify"], "--deidentify needs --deid-key FILE"),
        (["--reject-burned-in"], "need --deidentify"),
        (["--deid-option", "retain-device-identity"], "need --deidentify"),
    ],
)
def test_deidentify_options_without_their_partner_are_usage_errors(study, tmp_path, args, message):
    archive, _ = study
    arguments = ["export", str(archive), str(tmp_path / "out"), "--all", *args]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2 and message in result.output
