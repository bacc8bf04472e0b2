"""Sharing a study: the zip download (``Accept: application/zip``, PS3.18 8.6.1.3) and
``localdicom export``, with a DICOMDIR (PS3.3 F.3, PS3.10 8, PS3.11 file IDs) and converted
transfer syntaxes.

Entries are compared with the original files byte for byte, converted ones with pydicom's
decoding of the originals; DICOMDIRs are read back with pydicom's ``FileSet`` and dcmtk's
``dcmdump``.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import aiohttp
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.encaps import encapsulate
from pydicom.fileset import FileSet

from localdicom import packaging
from localdicom.cli import main
from localdicom.dicom.describing import describe
from localdicom.dicom.dicomdir import DicomDir, file_id
from localdicom.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN
from tests.helpers import SAMPLES, STUDY_UID, app_client
from tests.helpers.corpus import pydicom_file

CORPUS = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtdose.dcm")
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
ZIP = "application/zip"


def originals() -> list[Path]:
    return sorted(SAMPLES.glob("*.dcm")) + [pydicom_file(name) for name in CORPUS]


def by_sop(paths: list[Path]) -> dict[str, bytes]:
    return {str(pydicom.dcmread(path).SOPInstanceUID): path.read_bytes() for path in paths}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """The samples and a few files of pydicom's corpus, imported."""
    folder = tmp_path_factory.mktemp("share") / "archive"
    result = CliRunner().invoke(main, ["import", *map(str, originals()), "--archive", str(folder)])
    assert result.exit_code == 0, result.output
    return folder


def export(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["export", *map(str, args)])
    return result.exit_code, result.output


def assert_file_set(root: Path, expected: dict[str, bytes]) -> FileSet:
    """The DICOMDIR at ``root`` lists exactly the expected instances, each referenced file
    present, named as PS3.10 8.5 allows, and identical to the original."""
    file_set = FileSet(pydicom.dcmread(root / "DICOMDIR"))
    listed = {}
    for instance in file_set:
        path = Path(instance.path)
        assert all(len(part) <= 8 and part.isupper() for part in path.relative_to(root).parts)
        listed[instance.SOPInstanceUID] = path.read_bytes()
    assert listed.keys() == expected.keys()
    return file_set


# the DICOMDIR alone ---------------------------------------------------------------------------


def test_dicomdir_offsets_point_at_their_records_and_pydicom_reads_the_hierarchy(tmp_path):
    """PS3.3 F.3.2.1: every offset is the position of an item tag; FileSet follows them."""
    directory = DicomDir()
    for place, path in enumerate(originals(), 1):
        with path.open("rb") as fp:
            header = describe(fp)
        name = file_id(place, 1, 1)
        directory.add(name, header.metadata, header.transfer_syntax)
        target = tmp_path.joinpath(*name)
        target.parent.mkdir(parents=True)
        shutil.copyfile(path, target)
    (tmp_path / "DICOMDIR").write_bytes(directory.encode())
    file_set = assert_file_set(tmp_path, by_sop(originals()))
    for instance in file_set:  # PS3.3 F.4: the four-level hierarchy
        assert [node.record_type for node in instance.node.reverse()][1:] == [
            "SERIES",
            "STUDY",
            "PATIENT",
        ]


def test_an_empty_dicomdir_is_still_a_dicomdir():
    """Every instance left out (none could be converted): a file set with no records."""
    ds = pydicom.dcmread(io.BytesIO(DicomDir().encode()))
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
    assert ds.DirectoryRecordSequence == []
    assert ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity == 0


# the web download -----------------------------------------------------------------------------


async def zip_of(client, path: str, **headers: str) -> zipfile.ZipFile:
    response = await client.get(path, headers=headers)
    body = await response.read()
    assert response.status == 200, body[:300]
    assert response.headers["Content-Type"] == ZIP
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    return archive


async def test_a_study_zip_holds_its_stored_files_byte_for_byte(archive):
    expected = by_sop(sorted(SAMPLES.glob("*.dcm")))
    async with app_client(archive) as client:
        for how in ({"Accept": ZIP}, {}):
            query = "" if how else "?accept=application/zip"
            zipped = await zip_of(client, f"/v1/studies/{STUDY_UID}{query}", **how)
            entries = {info.filename: zipped.read(info) for info in zipped.infolist()}
            assert {name.split("/")[-1].removesuffix(".dcm") for name in entries} == set(expected)
            for name, data in entries.items():
                study, series, sop = name.removesuffix(".dcm").split("/")
                assert study == STUDY_UID and data == expected[sop]
                assert series == pydicom.dcmread(io.BytesIO(data)).SeriesInstanceUID


@pytest.mark.external
async def test_unzip_tests_a_streamed_zip_clean(archive, tmp_path):
    """Info-ZIP's unzip reads the data descriptors a streamed zip has (APPNOTE 4.3.9) and
    checks every entry's CRC."""
    async with app_client(archive) as client:
        response = await client.get(f"/studies/{STUDY_UID}?dicomdir=true", headers={"Accept": ZIP})
        (tmp_path / "study.zip").write_bytes(await response.read())
    tested = subprocess.run(
        ["unzip", "-t", str(tmp_path / "study.zip")], capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "No errors detected" in tested.stdout and tested.stdout.count("OK") == 4


async def test_the_zip_is_never_the_default(archive):
    async with app_client(archive) as client:
        response = await client.get(f"/studies/{STUDY_UID}", headers={"Accept": "*/*"})
        assert response.headers["Content-Type"].startswith("multipart/related")


async def test_a_series_zip_with_a_dicomdir_is_a_file_set(archive, tmp_path):
    series = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    url = f"/studies/{series.StudyInstanceUID}/series/{series.SeriesInstanceUID}"
    async with app_client(archive) as client:
        zipped = await zip_of(client, f"{url}?dicomdir=true", Accept=ZIP)
    assert {info.filename for info in zipped.infolist()} == {
        "DICOM/ST000001/SE000001/IM000001",
        "DICOMDIR",
    }
    zipped.extractall(tmp_path)
    assert_file_set(tmp_path, by_sop([pydicom_file("CT_small.dcm")]))


async def test_a_zip_in_another_transfer_syntax_has_the_same_pixels(archive):
    expected = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, SAMPLES.glob("*.dcm"))}
    accept = f"{ZIP}; transfer-syntax={JPEG_2000_LOSSLESS}"
    async with app_client(archive) as client:
        zipped = await zip_of(client, f"/studies/{STUDY_UID}", Accept=accept)
    for info in zipped.infolist():
        ds = pydicom.dcmread(io.BytesIO(zipped.read(info)))
        assert ds.file_meta.TransferSyntaxUID == JPEG_2000_LOSSLESS
        np.testing.assert_array_equal(ds.pixel_array, expected[ds.SOPInstanceUID].pixel_array)


@pytest.mark.parametrize(
    ("query", "accept", "status", "fragment"),
    [
        ("", f"{ZIP}; transfer-syntax=1.2.3", 406, "application/zip; transfer-syntax=*"),
        ("?dicomdir=maybe", ZIP, 400, "dicomdir=true"),
    ],
)
async def test_what_cannot_be_zipped_is_a_client_error(archive, query, accept, status, fragment):
    async with app_client(archive) as client:
        response = await client.get(f"/studies/{STUDY_UID}{query}", headers={"Accept": accept})
        assert response.status == status
        assert fragment in await response.text()


# streaming ------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_zip64_past_4_gib_in_a_stream(tmp_path):
    """An entry over 4 GiB and an entry that starts past 4 GiB (APPNOTE 4.5.3: ZIP64 sizes
    and offsets), written to a stream that cannot seek. The big entry is a sparse file and
    the zip is written sparse (runs of zeros skipped), so the disk holds little."""
    big = tmp_path / "big.dcm"
    with big.open("wb") as fp:
        fp.truncate(4 * 1024**3 + 12345)
    small = pydicom_file("CT_small.dcm")
    out = (tmp_path / "out.zip").open("wb")

    async def send(data: bytes) -> None:
        if data.count(0) == len(data):
            out.seek(len(data), io.SEEK_CUR)
        else:
            out.write(data)

    members = [
        packaging.Member(big, 0, "1.2", "1.2.3", "9", EXPLICIT_VR_LITTLE_ENDIAN, dict),
        packaging.Member(small, 0, "1.2", "1.2.3", "8", EXPLICIT_VR_LITTLE_ENDIAN, dict),
    ]
    await packaging.package(members, packaging.ZipSink(send=send), _no_conversion)
    out.truncate()
    out.close()
    with zipfile.ZipFile(tmp_path / "out.zip") as zipped:
        first, second = zipped.infolist()
        assert first.file_size == big.stat().st_size
        assert second.header_offset > 0xFFFFFFFF
        assert zipped.read(second) == small.read_bytes()


async def _no_conversion(member: packaging.Member, syntax: str) -> bytes:
    raise AssertionError("nothing is converted here")


# export ---------------------------------------------------------------------------------------


def test_export_to_a_folder_copies_the_stored_files_by_uid(archive, tmp_path):
    dest = tmp_path / "out"
    code, output = export(archive, dest, "--all")
    assert code == 0, output
    assert "Exported to" in output and "7 instances" in output
    expected = by_sop(originals())
    written = {path.stem: path.read_bytes() for path in dest.rglob("*.dcm")}
    assert written == expected
    for path in dest.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        assert path.relative_to(dest).parts[:2] == (ds.StudyInstanceUID, ds.SeriesInstanceUID)


@pytest.mark.external
def test_export_to_a_zip_with_a_dicomdir_is_a_file_set_dcmtk_reads(archive, tmp_path):
    dest = tmp_path / "cd.zip"
    code, output = export(archive, dest, "--all", "--zip", "--dicomdir")
    assert code == 0, output
    with zipfile.ZipFile(dest) as zipped:
        assert zipped.testzip() is None
        zipped.extractall(tmp_path / "cd")
    assert_file_set(tmp_path / "cd", by_sop(originals()))
    dump = subprocess.run(
        ["/usr/bin/dcmdump", "-q", str(tmp_path / "cd" / "DICOMDIR")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert dump.stdout.count("ReferencedFileID") == len(originals())
    assert "MediaStorageDirectoryStorage" in dump.stdout
    # dcmtk's own DICOMDIR writer, asked to add every file to ours, finds each recorded
    # already (it read our records and their offsets): not one record more
    subprocess.run(
        ["/usr/bin/dcmmkdir", "+U", "+I", "-q", "-Nxc", "+D", "DICOMDIR", "+r", "DICOM"],
        cwd=tmp_path / "cd",
        check=True,
    )
    again = subprocess.run(
        ["/usr/bin/dcmdump", "-q", str(tmp_path / "cd" / "DICOMDIR")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for record_type in ("PATIENT", "STUDY", "SERIES", "IMAGE", "RT DOSE"):
        assert again.count(f"[{record_type}]") == dump.stdout.count(f"[{record_type}]") > 0


def test_export_converts_to_the_transfer_syntax_asked(archive, tmp_path):
    dest = tmp_path / "ele"
    code, output = export(
        archive, dest, "--query", "Modality=MR", "--transfer-syntax", EXPLICIT_VR_LITTLE_ENDIAN
    )
    assert code == 0, output
    (written,) = dest.rglob("*.dcm")
    ds = pydicom.dcmread(written)
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
    original = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    np.testing.assert_array_equal(ds.pixel_array, original.pixel_array)


def test_export_with_a_dicomdir_in_a_folder(archive, tmp_path):
    dest = tmp_path / "cd"
    code, output = export(archive, dest, "--series", _series_of("rtdose.dcm"), "--dicomdir")
    assert code == 0, output
    file_set = assert_file_set(dest, by_sop([pydicom_file("rtdose.dcm")]))
    assert [instance.DirectoryRecordType for instance in file_set] == ["RT DOSE"]
    # Type 1 in the record (PS3.3 F.5), empty in the file: invented as its place
    assert pydicom.dcmread(pydicom_file("rtdose.dcm")).InstanceNumber is None
    records = pydicom.dcmread(dest / "DICOMDIR").DirectoryRecordSequence
    (leaf,) = [record for record in records if record.DirectoryRecordType == "RT DOSE"]
    assert leaf.InstanceNumber == 1


def _series_of(name: str) -> str:
    return str(pydicom.dcmread(pydicom_file(name)).SeriesInstanceUID)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give --all"),
        (("--all", "--study", "1.2"), "give --all"),
        (("--study", "1.02"), "--study"),
        (("--query", "Nonsense=1"), "Nonsense"),
        (("--all", "--transfer-syntax", "1.2.3"), "--transfer-syntax"),
    ],
)
def test_a_wrong_command_line_is_a_usage_error(archive, tmp_path, args, message):
    code, output = export(archive, tmp_path / "out", *args)
    assert code == 2 and message in output
    assert list(tmp_path.iterdir()) == []


def test_an_existing_destination_is_refused(archive, tmp_path):
    (tmp_path / "out").mkdir()
    code, output = export(archive, tmp_path / "out", "--all")
    assert code == 2 and "exists" in output


def test_nothing_selected_is_an_error(archive, tmp_path):
    code, output = export(archive, tmp_path / "out", "--query", "Modality=XA")
    assert code == 1 and "nothing" in output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("as_zip", [False, True])
def test_an_interrupted_export_leaves_nothing(archive, tmp_path, monkeypatch, as_zip):
    """Ctrl-C in the middle: no DEST, no temporary file or folder beside it."""
    sink = packaging.ZipSink if as_zip else packaging.FolderSink
    written = []
    original = sink.add_file

    async def add_then_interrupt(self, name, fp):
        if written:
            raise KeyboardInterrupt
        written.append(name)
        return await original(self, name, fp)

    monkeypatch.setattr(sink, "add_file", add_then_interrupt)
    flags = ["--zip"] if as_zip else []
    code, output = export(archive, tmp_path / "out", "--all", *flags)
    assert code == 130 and "Interrupted" in output
    assert written and list(tmp_path.iterdir()) == []


def test_an_instance_that_cannot_be_converted_is_listed_and_the_rest_exported(tmp_path):
    """Its pixel data is not JPEG 2000 at all: the converter refuses it, the export goes on
    without it, names it, and exits 1."""
    broken = pydicom.dcmread(pydicom_file("JPEG2000.dcm"))
    broken.SOPInstanceUID = broken.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7"
    broken.PixelData = encapsulate([b"\x00" * 64])
    broken.save_as(tmp_path / "broken.dcm", enforce_file_format=True)
    archive = tmp_path / "archive"
    sources = [str(tmp_path / "broken.dcm"), str(pydicom_file("MR_small.dcm"))]
    imported = CliRunner().invoke(main, ["import", *sources, "--archive", str(archive)])
    assert imported.exit_code == 0, imported.output
    dest = tmp_path / "out.zip"
    code, output = export(
        archive, dest, "--all", "--zip", "--transfer-syntax", EXPLICIT_VR_LITTLE_ENDIAN
    )
    assert code == 1 and "error: 1.2.3.4.5.6.7: cannot be converted" in output, output
    with zipfile.ZipFile(dest) as zipped:
        (name,) = zipped.namelist()
    assert name.endswith(f"{pydicom.dcmread(pydicom_file('MR_small.dcm')).SOPInstanceUID}.dcm")


async def test_a_file_gone_before_the_zip_starts_is_a_404_not_a_500(tmp_path):
    """Removed behind the server's back (by hand, or a DELETE racing the download)."""
    archive = tmp_path / "archive"
    source = str(pydicom_file("MR_small.dcm"))
    assert CliRunner().invoke(main, ["import", source, "--archive", str(archive)]).exit_code == 0
    ds = pydicom.dcmread(source)
    async with app_client(archive) as client:
        (archive / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm").unlink()
        response = await client.get(f"/studies/{ds.StudyInstanceUID}", headers={"Accept": ZIP})
        assert response.status == 404 and "deleted" in await response.text()


def test_a_destination_that_cannot_be_written_is_one_line_and_leaves_nothing(
    archive, tmp_path, monkeypatch
):
    async def full(self, name, fp):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(packaging.FolderSink, "add_file", full)
    code, output = export(archive, tmp_path / "out", "--all")
    assert code == 1 and "No space left on device" in output and "Traceback" not in output
    assert list(tmp_path.iterdir()) == []


async def test_a_conversion_failing_mid_zip_closes_the_connection(tmp_path):
    """The answer has started: the status cannot change, so the client gets a zip cut short
    (no central directory), never one that looks whole."""
    good = pydicom.dcmread(pydicom_file("JPEG2000.dcm"))
    broken = pydicom.dcmread(pydicom_file("JPEG2000.dcm"))
    broken.SOPInstanceUID = broken.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.8"
    broken.InstanceNumber = int(good.InstanceNumber or 0) + 1
    broken.PixelData = encapsulate([b"\x00" * 64])
    async with app_client(tmp_path / "archive") as client:
        for ds in (good, broken):
            body = io.BytesIO()
            ds.save_as(body, enforce_file_format=True)
            stored = await client.post(
                "/studies", data=body.getvalue(), headers={"Content-Type": "application/dicom"}
            )
            assert stored.status == 200
        accept = f"{ZIP}; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
        response = await client.get(f"/studies/{good.StudyInstanceUID}", headers={"Accept": accept})
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
