"""``localdicom import``, ``reindex``, ``ls`` and ``serve --import-found``.

Sources are built the way they arrive in practice: a folder tree with files named IM0001,
1.dcm or nothing in particular and other files mixed in, a zip, a CD-like tree written by
pydicom's FileSet with its DICOMDIR. Instances are small synthetic CT slices
(``benchmarks.dataset.ct_slice``) with UIDs derived from names, so each test knows exactly
what it stores. Summary numbers are checked exactly.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO

import click
import pydicom
import pytest
from click.testing import CliRunner, Result
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from localdicom.app import make_app
from localdicom.archive import held
from localdicom.archive import sidecar as sidecar_file
from localdicom.archive.layout import SERVER_FILE
from localdicom.cli import main
from localdicom.importer import examine as examine_module
from localdicom.importer import run as importer_run
from localdicom.importer.examine import examine_batch
from tests.helpers import app_settings, ct_slice, free_port, uid
from tests.helpers.live import LiveServer, request

ROWS = (
    "stored",
    "already present",
    "conflicts",
    "not DICOM",
    "errors",
    "DICOMDIR read",
    "zip files opened",
)


# helpers ------------------------------------------------------------------------------------


def ct(path: Path, index: int, study: str = "study-a", series: str = "series-1", **kw) -> Path:
    """A 32x32 CT slice at ``path``; same (study, series, index) means same SOP UID."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ct_slice(study, series, index, size=32, **kw)
    ds.save_as(path, enforce_file_format=True)
    return path


def sop(index: int, series: str = "series-1") -> str:
    return uid(f"{series}/{index}")


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def counts(result: Result) -> dict[str, int]:
    """The numbers of the summary, by row name."""
    pattern = re.compile(r"^  (" + "|".join(ROWS) + r")\s+(\d+)$", re.MULTILINE)
    found = {name: int(number) for name, number in pattern.findall(result.stdout)}
    assert set(found) == set(ROWS), result.output
    return found


KEYWORDS = dict(
    zip(
        ["stored", "duplicates", "conflicts", "not_dicom", "errors", "dicomdirs", "zips"],
        ROWS,
        strict=True,
    )
)


def expect(result: Result, exit_code: int = 0, **numbers: int) -> None:
    """The summary says exactly ``numbers`` (by KEYWORDS; rows not named are 0)."""
    wanted = {name: 0 for name in ROWS} | {KEYWORDS[k]: n for k, n in numbers.items()}
    assert counts(result) == wanted, result.output
    assert result.exit_code == exit_code, result.output


def stored_files(archive: Path) -> list[Path]:
    return sorted(archive.glob("*/*/*.dcm"))


def assert_clean(archive: Path, instances: int) -> None:
    """``instances`` .dcm files, each with a current sidecar, and nothing left in .incoming."""
    files = stored_files(archive)
    assert len(files) == instances
    assert len({path.stem for path in files}) == instances
    assert all(sidecar_file.read_current(path) is not None for path in files)
    assert list((archive / ".incoming").iterdir()) == []


def pydicom_file(name: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Path(get_testdata_file(name))


# folders, zips, DICOMDIR ------------------------------------------------------------------


def mixed_tree(root: Path) -> None:
    """4 instances at several depths under odd names, one identical copy, one conflicting
    file, 4 files that are not DICOM, a DICOM file without Series UID, a broken link."""
    ct(root / "IM0001", 0)
    ct(root / "b" / "1.dcm", 1)
    ct(root / "b" / "c" / "IMG", 2)
    ct(root / "b" / "c" / "d" / "e" / "deep", 3)
    shutil.copyfile(root / "IM0001", root / "b" / "copy-of-IM0001")
    ct(root / "b" / "c" / "conflict", 1, patient="OTHER^PATIENT")  # same SOP UID, other bytes
    (root / "README.txt").write_text("scans from the collaborator\n")
    (root / "b" / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(3000))
    (root / "b" / "empty").write_bytes(b"")
    with zipfile.ZipFile(root / "b" / "report.docx", "w") as docx:
        docx.writestr("word/document.xml", "<w:document/>")
    ds = ct_slice("study-a", "series-1", 9, size=32)
    del ds.SeriesInstanceUID
    ds.save_as(root / "b" / "no-series.dcm", enforce_file_format=True)
    (root / "b" / "dangling").symlink_to(root / "nowhere")


def test_nested_folder_with_other_files_mixed_in(tmp_path: Path) -> None:
    source, archive = tmp_path / "from-alice", tmp_path / "archive"
    mixed_tree(source)

    result = run("import", source, "--archive", archive)

    expect(result, 1, stored=4, duplicates=1, conflicts=1, not_dicom=4, errors=2)
    assert "Imported into" in result.stdout and "directly" in result.stdout
    assert ": 12 files, " in result.stdout.splitlines()[0]
    assert "4 files are not DICOM; --verbose lists them." in result.stdout
    conflict = r"conflict: .*: SOP Instance \S+ is already stored with different content"
    assert re.search(conflict, result.stdout)
    assert re.search(r"error: .*no-series.dcm: a DICOM file that cannot be stored", result.stdout)
    assert re.search(r"error: .*dangling: a broken symbolic link", result.stdout)
    assert_clean(archive, 4)
    assert {path.stem for path in stored_files(archive)} == {sop(i) for i in range(4)}
    stored = {path.stem: path.read_bytes() for path in stored_files(archive)}
    assert stored[sop(0)] == (source / "IM0001").read_bytes()
    assert (source / "IM0001").exists()  # copied, not moved


def test_verbose_lists_every_file_that_is_not_dicom(tmp_path: Path) -> None:
    source, archive = tmp_path / "from-alice", tmp_path / "archive"
    mixed_tree(source)

    result = run("import", source, "--archive", archive, "--verbose")

    not_dicom = sorted(line for line in result.stdout.splitlines() if line.startswith("not DICOM:"))
    assert [line.split(": ")[1].rsplit("/", 1)[1] for line in not_dicom] == [
        "README.txt",
        "empty",
        "photo.jpg",
        "report.docx",
    ]
    assert "no 'DICM' at byte 128" in result.stdout
    assert "an empty file" in result.stdout
    assert "a zip-format file not named .zip" in result.stdout


def test_rerun_stores_nothing_twice(tmp_path: Path) -> None:
    source, archive = tmp_path / "from-alice", tmp_path / "archive"
    mixed_tree(source)
    run("import", source, "--archive", archive)

    again = run("import", source, "--archive", archive)

    expect(again, 1, duplicates=5, conflicts=1, not_dicom=4, errors=2)
    assert_clean(archive, 4)


def test_zip(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    export = tmp_path / "pacs-export.zip"
    with zipfile.ZipFile(export, "w", zipfile.ZIP_DEFLATED) as out:
        for index in range(3):
            out.write(ct(tmp_path / "x" / f"{index}", index), f"EXPORT/SER1/IM{index:04d}")
        out.writestr("EXPORT/README.TXT", "exported by a PACS")
        out.writestr("__MACOSX/EXPORT/._IM0000", b"\x00\x05\x16\x07" + bytes(200))
        out.writestr("EXPORT/", "")  # a folder entry: not a file
        out.write(tmp_path / "x" / "0", "EXPORT/copy/IM0000")  # the same instance again

    result = run("import", export, "--archive", archive)

    expect(result, stored=3, duplicates=1, not_dicom=2, zips=1)
    assert_clean(archive, 3)
    expect(run("import", export, "--archive", archive), duplicates=4, not_dicom=2, zips=1)


def test_zip_inside_a_folder_and_inside_a_zip(tmp_path: Path) -> None:
    source, archive = tmp_path / "source", tmp_path / "archive"
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as out:
        out.write(ct(tmp_path / "x" / "0", 0), "IM0")
    source.mkdir()
    with zipfile.ZipFile(source / "outer.zip", "w") as out:
        out.write(ct(tmp_path / "x" / "1", 1), "IM1")
        out.write(inner, "nested/inner.zip")

    result = run("import", source, "--archive", archive, "-v")

    expect(result, stored=1, not_dicom=1, zips=1)
    assert "outer.zip:nested/inner.zip: a zip inside a zip is not opened" in result.stdout


def cd_export(folder: Path, count: int = 3) -> list[str]:
    """A CD-like tree: DICOMDIR plus PT000000/ST000000/SE000000/IM00000n (pydicom FileSet),
    the instances being copies of CT_small.dcm with new SOP Instance UIDs."""
    fileset = FileSet()
    uids = []
    for _ in range(count):
        ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        uids.append(ds.SOPInstanceUID)
        fileset.add(ds)
    fileset.write(folder)
    return uids


def test_dicomdir_tree(tmp_path: Path) -> None:
    cd, archive = tmp_path / "cdrom", tmp_path / "archive"
    uids = cd_export(cd)
    assert (cd / "DICOMDIR").exists()

    result = run("import", cd, "--archive", archive)

    expect(result, stored=3, dicomdirs=1)
    assert {path.stem for path in stored_files(archive)} == set(uids)
    assert_clean(archive, 3)


def test_dicomdir_named_alone_imports_what_it_lists(tmp_path: Path) -> None:
    """Named on the command line, a DICOMDIR brings the files it lists, matched without
    regard to case (a CD mounted on Linux often shows its upper-case names in lower case)."""
    cd, archive = tmp_path / "cdrom", tmp_path / "archive"
    uids = cd_export(cd)
    for path in sorted(cd.rglob("*"), key=lambda p: -len(p.parts)):
        if path.name != "DICOMDIR":
            path.rename(path.with_name(path.name.lower()))
    (cd / "notes.txt").write_text("not listed, not read")

    result = run("import", cd / "DICOMDIR", "--archive", archive)

    expect(result, stored=3, dicomdirs=1)
    assert {path.stem for path in stored_files(archive)} == set(uids)


def test_a_file_the_dicomdir_lists_but_is_missing_is_an_error(tmp_path: Path) -> None:
    cd, archive = tmp_path / "cdrom", tmp_path / "archive"
    cd_export(cd)
    missing = sorted(cd.rglob("IM*"))[0]
    missing.unlink()

    result = run("import", cd, "--archive", archive)

    expect(result, 1, stored=2, errors=1, dicomdirs=1)
    assert f"error: {missing}: listed in {cd / 'DICOMDIR'} but not found" in result.stdout


async def test_sidecar_is_the_one_stow_writes(tmp_path: Path, aiohttp_client) -> None:
    """Import stores exactly what STOW-RS stores: the same bytes and the same sidecar."""
    files = [pydicom_file(name) for name in ("CT_small.dcm", "JPEG2000.dcm", "rtplan.dcm")]
    imported, stowed = tmp_path / "imported", tmp_path / "stowed"
    expect(run("import", *files, "--archive", imported), stored=3)
    client = await aiohttp_client(make_app(app_settings(stowed)))
    for file in files:
        response = await client.post(
            "/studies", data=file.read_bytes(), headers={"Content-Type": "application/dicom"}
        )
        assert response.status == 200

    def sidecars(archive: Path) -> dict[str, dict]:
        return {
            str(path.relative_to(archive)): json.loads(path.read_bytes()) | {"mtime_ns": 0}
            for path in archive.glob("*/*/*.json")
        }

    assert len(sidecars(imported)) == 3
    assert sidecars(imported) == sidecars(stowed)
    for path in stored_files(imported):
        assert path.read_bytes() == (stowed / path.relative_to(imported)).read_bytes()


# interruption -------------------------------------------------------------------------------


def many_slices(folder: Path, count: int) -> None:
    for index in range(count):
        ct(folder / f"s{index // 100}" / f"IM{index:05d}", index, series="many")


def start_import(source: Path, archive: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "localdicom", "import", str(source), "--archive"]
    command += [str(archive), "--workers", "2"]
    return subprocess.Popen(
        command, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_until_stored(archive: Path, process: subprocess.Popen, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while len(stored_files(archive)) < at_least:
        assert process.poll() is None, "the import ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_import_then_rerun(tmp_path: Path, signal_number: int) -> None:
    """Killed (SIGKILL: no chance to clean up) or interrupted (Ctrl-C: stops between two
    instances), then run again: every instance stored exactly once, nothing left over."""
    source, archive = tmp_path / "source", tmp_path / "archive"
    total = 600
    many_slices(source, total)
    process = start_import(source, archive, tmp_path / "import.log")
    wait_until_stored(archive, process, 20)
    os.killpg(process.pid, signal_number)  # the import and its workers, as Ctrl-C does
    process.wait(timeout=60)
    before = len(stored_files(archive))
    assert before < total
    if signal_number == signal.SIGINT:
        output = (tmp_path / "import.log").read_text()
        assert process.returncode == 130, output
        assert "Interrupted into" in output and "Run the same command again" in output
        assert_clean(archive, before)  # a clean stop: whole instances, nothing staged

    result = run("import", source, "--archive", archive)

    expect(result, stored=total - before, duplicates=before)
    assert_clean(archive, total)


def test_second_import_on_the_same_archive_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    ct(tmp_path / "IM1", 1)
    command = [sys.executable, "-c", HOLD_LOCK, str(archive)]
    holder = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        result = run("import", tmp_path / "IM1", "--archive", archive)
    finally:
        holder.communicate(b"")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: another import or reindex is writing to {archive}; wait for it to finish"
    ]


HOLD_LOCK = """
import sys
from pathlib import Path
from localdicom.archive import archive_lock
with archive_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def crash_on_a_file_named_crash(sources: list, plan: object) -> list:
    """examine_batch in a worker that dies (as when the kernel kills it for memory)."""
    if any(source.path.name == "CRASH" for source in sources):
        os._exit(1)
    return examine_batch(sources, plan)


def test_a_worker_that_dies_is_reported(tmp_path: Path, monkeypatch) -> None:
    source, archive = tmp_path / "source", tmp_path / "archive"
    for name in ("IM0", "IM1", "CRASH"):
        ct(source / name, int(name == "CRASH"))
    monkeypatch.setattr(importer_run, "examine_batch", crash_on_a_file_named_crash)

    result = run("import", source, "--archive", archive, "--workers", "1")

    expect(result, 1, errors=3)  # one batch: the three files
    assert result.stdout.count("not examined: a worker process died") == 3
    assert list((archive / ".incoming").iterdir()) == []


def test_a_full_disk_is_an_error_and_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    """The workers (forked from this process, the simulation with them) stage each copy and
    its sidecar; one that cannot be written is an error naming the file, not a read error,
    and nothing of it stays in the archive."""
    source, archive = tmp_path / "source", tmp_path / "archive"
    files = [ct(source / f"IM{i}", i) for i in range(3)]

    def no_space(_fd: int, _data: memoryview) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(held, "_write_all", no_space)
    result = run("import", source, "--archive", archive, "--workers", "1")

    expect(result, 1, errors=3)
    for file in files:
        assert f"{file}: cannot be written to the archive: No space left on device" in result.stdout
    assert stored_files(archive) == []
    assert list((archive / ".incoming").iterdir()) == []


def test_a_file_that_grows_while_it_is_copied_is_not_stored(tmp_path: Path, monkeypatch) -> None:
    """The size read is the size found first: a file another program is still writing is
    an error (to import again once it is complete), never a copy cut short."""
    archive = tmp_path / "archive"
    file = ct(tmp_path / "IM0", 0)
    reading = examine_module.read_whole

    def written_to_meanwhile(fp: BinaryIO, size: int):
        with file.open("ab") as more:
            more.write(b"\0" * 100)
        return reading(fp, size)

    monkeypatch.setattr(examine_module, "read_whole", written_to_meanwhile)
    result = run("import", file, "--archive", archive, "--workers", "1")

    expect(result, 1, errors=1)
    assert f"{file}: the file changed while it was being imported" in result.stdout
    assert_clean(archive, 0)


def test_fsync_stores_each_instance_flushed(tmp_path: Path) -> None:
    source, archive = tmp_path / "source", tmp_path / "archive"
    files = [ct(source / f"IM{i}", i) for i in range(3)]

    expect(run("import", source, "--archive", archive, "--fsync"), stored=3)

    assert sorted(path.read_bytes() for path in stored_files(archive)) == sorted(
        file.read_bytes() for file in files
    )
    assert_clean(archive, 3)


# move, link, overwrite ----------------------------------------------------------------------


def test_link_shares_the_bytes(tmp_path: Path) -> None:
    source, archive = tmp_path / "source", tmp_path / "archive"
    files = [ct(source / f"IM{i}", i) for i in range(3)]

    expect(run("import", source, "--archive", archive, "--link"), stored=3)

    for file in files:
        stored = archive / uid("study-a") / uid("series-1") / f"{sop(int(file.name[2:]))}.dcm"
        assert stored.stat().st_ino == file.stat().st_ino
    assert_clean(archive, 3)


def test_move_leaves_only_what_was_not_imported(tmp_path: Path) -> None:
    source, archive = tmp_path / "from-alice", tmp_path / "archive"
    mixed_tree(source)

    result = run("import", source, "--archive", archive, "--move")

    expect(result, 1, stored=4, duplicates=1, conflicts=1, not_dicom=4, errors=2)
    left = sorted(path.name for path in source.rglob("*") if not path.is_dir())
    conflict_left = {"1.dcm", "conflict"} & set(left)
    assert len(conflict_left) == 1  # one of the two was stored, the other conflicts and stays
    assert sorted(set(left) - conflict_left) == sorted(
        ["README.txt", "photo.jpg", "empty", "report.docx", "no-series.dcm", "dangling"]
    )
    assert_clean(archive, 4)


def test_overwrite_replaces_a_conflicting_instance(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    first = ct(tmp_path / "a" / "IM1", 1)
    second = ct(tmp_path / "b" / "IM1", 1, patient="OTHER^PATIENT")
    expect(run("import", first, "--archive", archive), stored=1)

    expect(run("import", second, "--archive", archive), 1, conflicts=1)
    expect(run("import", second, "--archive", archive, "--overwrite"), stored=1)

    (stored,) = stored_files(archive)
    assert stored.read_bytes() == second.read_bytes()
    assert_clean(archive, 1)


# while a server runs ------------------------------------------------------------------------


def qido_instances(server: LiveServer) -> set[str]:
    reply = request(f"{server.url}/instances", accept="application/dicom+json")
    assert reply.status == 200, reply.text
    return {item["00080018"]["Value"][0] for item in json.loads(reply.body)}


@pytest.mark.slow
def test_import_while_serving(tmp_path: Path, live_server: LiveServer) -> None:
    source = tmp_path / "source"
    for index in range(5):
        ct(source / f"IM{index}", index)
    ct(source / "other" / "IM1", 1, patient="OTHER^PATIENT")  # conflicts with IM1
    (source / "notes.txt").write_text("hello")
    assert qido_instances(live_server) == set()

    result = run("import", source, "--archive", live_server.archive)

    expect(result, 1, stored=5, conflicts=1, not_dicom=1)
    assert f"through the server at {live_server.url}" in result.stdout
    assert qido_instances(live_server) == {sop(i) for i in range(5)}  # no restart
    again = run("import", source / "IM0", source / "IM3", "--archive", live_server.archive)
    expect(again, duplicates=2)
    assert "POST /studies 200" in live_server.log.read_text()


def test_a_server_that_does_not_answer_stops_the_import(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    (archive / SERVER_FILE).write_text(json.dumps({"url": url, "pid": os.getpid()}))

    result = run("import", ct(tmp_path / "IM1", 1), "--archive", archive)

    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: {archive / SERVER_FILE} names a server at {url} that")
    assert line.endswith("stop it, or delete that file if no server runs")
    assert stored_files(archive) == []


# reindex ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_reindex_after_deleting_every_sidecar(tmp_path: Path, archive_dir: Path) -> None:
    source = tmp_path / "source"
    for index in range(6):
        ct(source / f"IM{index}", index, series=f"series-{index % 2}")
    expect(run("import", source, "--archive", archive_dir), stored=6)
    for sidecar in archive_dir.glob("*/*/*.json"):
        sidecar.unlink()

    result = run("reindex", archive_dir)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("6 sidecars rebuilt (format 1), 0 already current, 0 failed")
    assert_clean(archive_dir, 6)
    server = LiveServer(archive_dir, free_port())
    server.start()
    try:
        assert len(qido_instances(server)) == 6
        assert "(0 sidecars regenerated, 0 files skipped)" in server.log.read_text()
    finally:
        server.stop()


def test_reindex_only_stale_and_misplaced_files(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    for index in range(3):
        ct(tmp_path / "source" / f"IM{index}", index)
    run("import", tmp_path / "source", "--archive", archive)
    first = stored_files(archive)[0]
    sidecar = json.loads(first.with_suffix(".json").read_bytes())
    first.with_suffix(".json").write_text(json.dumps(sidecar | {"format": 0}))
    misplaced = first.parent / f"{sop(7)}.dcm"
    shutil.copyfile(first, misplaced)

    result = run("reindex", archive, "--only-stale")

    assert result.exit_code == 1
    assert result.stdout.startswith("1 sidecars rebuilt (format 1), 2 already current, 1 failed")
    assert f"failed: {misplaced}: its UIDs place it at" in result.stdout
    assert json.loads(first.with_suffix(".json").read_bytes())["format"] == 1


# ls -----------------------------------------------------------------------------------------


def test_ls(tmp_path: Path) -> None:
    source, archive = tmp_path / "source", tmp_path / "archive"
    for index in range(3):
        ct(source / f"a{index}", index, study="study-a", series="a-ct")
    ct(source / "a-mr", 0, study="study-a", series="a-mr", modality="MR")
    ct(source / "b", 0, study="study-b", series="b-ct", patient="DOE^JANE", date="20230505")
    run("import", source, "--archive", archive)
    sizes = {}
    for study in ("study-a", "study-b"):
        folder = archive / uid(study)
        sizes[study] = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())

    result = run("ls", archive)

    assert result.exit_code == 0
    header, *rows = result.stdout.splitlines()
    columns = "PATIENT ID DATE DESCRIPTION MODALITIES SERIES INSTANCES SIZE STUDY UID"
    assert header.split() == columns.split()
    size_b, size_a = (f"{sizes[study] / 1000:.1f}" for study in ("study-b", "study-a"))
    jane = f"DOE^JANE DOE 2023-05-05 Benchmark study-b CT 1 1 {size_b} kB {uid('study-b')}"
    bench = f"BENCH^PATIENT BENCH 2024-01-01 Benchmark study-a CT,MR 2 4 {size_a} kB"
    assert [row.split() for row in rows] == [jane.split(), [*bench.split(), uid("study-a")]]

    with_series = [line.split() for line in run("ls", archive, "--series").stdout.splitlines()]
    assert len(with_series) == 1 + 2 + 3  # header, study b and its series, study a and its 2
    assert (with_series[1][0], with_series[3][0]) == ("DOE^JANE", "BENCH^PATIENT")
    assert with_series[2][:6] == ["2023-05-05", "Series", "b-ct", "CT", "#1", "1"]
    series_a = sorted(row[:6] + row[-1:] for row in with_series[4:])  # both are series #1
    assert series_a == [
        ["2024-01-01", "Series", "a-ct", "CT", "#1", "3", uid("a-ct")],
        ["2024-01-01", "Series", "a-mr", "MR", "#1", "1", uid("a-mr")],
    ]


def test_ls_says_what_it_cannot_list(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    run("import", ct(tmp_path / "IM1", 1), ct(tmp_path / "IM2", 2), "--archive", archive)
    stored_files(archive)[0].with_suffix(".json").unlink()
    result = run("ls", archive)
    assert "1 instances have no readable sidecar and are not listed; run: localdicom reindex" in (
        result.stdout
    )
    assert run("ls", tmp_path / "empty-archive-made-now").exit_code == 2
    (tmp_path / "empty").mkdir()
    assert run("ls", tmp_path / "empty").stdout == f"No studies in {tmp_path / 'empty'}.\n"


# serve on a folder that holds DICOM files -----------------------------------------------------


@pytest.mark.slow
def test_serve_says_what_it_found_outside_the_layout(archive_dir: Path) -> None:
    mixed_tree(archive_dir / "from-alice")
    server = LiveServer(archive_dir, free_port())
    server.start()
    try:
        assert qido_instances(server) == set()
        deadline = time.monotonic() + 30  # the folder is surveyed while the server serves
        while "outside its layout" not in (log := server.log.read_text()):
            assert time.monotonic() < deadline, "no word of the files outside the layout"
            time.sleep(0.1)
    finally:
        server.stop()
    assert "holds 7 DICOM files and 0 zip files outside its layout" in log
    assert f"localdicom import {archive_dir} --archive {archive_dir}" in log
    assert "--import-found" in log


@pytest.mark.slow
def test_serve_import_found(archive_dir: Path) -> None:
    mixed_tree(archive_dir / "from-alice")
    server = LiveServer(archive_dir, free_port(), extra_args=("--import-found",))
    server.start()
    try:
        assert qido_instances(server) == {sop(i) for i in range(4)}
        log = server.log.read_text()
    finally:
        server.stop()
    assert "importing 7 DICOM files and 0 zip files found in" in log
    assert re.search(r"stored\s+4", log) and re.search(r"conflicts\s+1", log)
    assert (archive_dir / "from-alice" / "IM0001").exists()  # the originals stay
    # a second start finds the same files, all already in the layout
    server.start()
    try:
        assert len(qido_instances(server)) == 4
    finally:
        server.stop()
    assert re.search(r"already present\s+5", server.log.read_text())


# the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["import", "reindex", "ls", "serve"])
def test_help_explains_every_option_with_an_example(name: str) -> None:
    command = main.commands[name]
    result = run(name, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    for parameter in command.params:
        if isinstance(parameter, click.Option):
            assert parameter.help, f"{name} {parameter.opts} has no help"
            assert parameter.opts[-1] in result.stdout
    if name != "serve":
        assert "Exit codes:" in result.stdout and "130" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["import", "."], "Error: Missing option '-a' / '--archive'."),
        (["import", "--archive", "a"], "Error: Missing argument 'SOURCE...'."),
        (["import", "/no/such/folder", "-a", "a"], "Error: Invalid value for 'SOURCE...'"),
        (["ls"], "Error: Missing argument 'ARCHIVE'."),
        (["reindex", "/no/such/archive"], "Error: Invalid value for 'ARCHIVE'"),
        (["serve", "a", "--port", "x"], "Error: Invalid value for '-p' / '--port'"),
        (["imprt"], "Error: No such command 'imprt'."),
    ],
)
def test_command_line_errors_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(message)
    assert "--help'" in line
