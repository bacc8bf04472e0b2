"""The one-file executable (``python -m localdicom.freeze``), run as a user without Python runs it.

It is built once per change of the sources (cached under ~/.cache/localdicom-test/frozen,
keyed by a hash of localdicom/, pyproject.toml, the samples and PyInstaller's version), then
every command runs with an environment that holds no virtual environment: PATH=/usr/bin:/bin,
a HOME and a TMPDIR of the test's own (where the executable unpacks itself, so that a
leftover is seen). Against it: the tutorial's curl commands (tests/test_tutorial_curl.py,
reused as they are) on a fresh archive with ``--samples``; an import of a folder and a zip,
``ls`` and ``reindex``; a JPEG 2000 frame decoded in a worker process; SIGTERM, and SIGKILL
of the launcher or of the server, after which no process may be left.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pydicom
import pytest

import tests.test_tutorial_curl as tutorial
from localdicom import __version__
from tests.helpers import REPOSITORY, SAMPLES, free_port, process_tree
from tests.helpers.corpus import native_frames_little_endian, pydicom_file
from tests.helpers.live import LiveServer, request
from tests.helpers.served import Instance, assert_serves

pytestmark = [pytest.mark.slow, pytest.mark.external]

CACHE = Path.home() / ".cache" / "localdicom-test" / "frozen"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
#: What the import reads from a folder, and from a zip (US1_J2KR: JPEG 2000, colour).
IN_FOLDER = ["CT_small.dcm", "JPEG2000.dcm"]
IN_ZIP = ["MR_small.dcm", "US1_J2KR.dcm", "SC_rgb_rle_2frame.dcm"]

# The tutorial's tests, in their order, run here too: against the executable, through the
# `server` and `live_server` fixtures below, which replace that module's own.
globals().update({name: item for name, item in vars(tutorial).items() if name.startswith("test_")})
curl = tutorial.curl


# building ------------------------------------------------------------------------------------


def source_key() -> str:
    """A hash of what the executable is built from."""
    files = [p for p in (REPOSITORY / "localdicom").rglob("*") if "__pycache__" not in p.parts]
    files += [REPOSITORY / "pyproject.toml", *SAMPLES.glob("*.dcm")]
    digest = hashlib.sha256(metadata.version("pyinstaller").encode())
    for path in sorted(p for p in files if p.is_file()):
        digest.update(str(path.relative_to(REPOSITORY)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def executable() -> Path:
    """The executable, built by the README's command unless this source was built before."""
    folder = CACHE / source_key()
    built = folder / "localdicom"
    if not built.is_file():
        shutil.rmtree(CACHE, ignore_errors=True)  # builds of older sources
        out = folder / "partial"
        command = [sys.executable, "-m", "localdicom.freeze", "--out", str(out)]
        subprocess.run(command, cwd=REPOSITORY, check=True, timeout=1800)
        (out / "localdicom").rename(built)  # whole, or not there
    return built


# running it as a user would ------------------------------------------------------------------


def bare_environment(home: Path) -> dict[str, str]:
    """No virtual environment, no Python variable; TMPDIR is where the executable unpacks."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home / "tmp")}


def run(executable: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(executable), *args],
        env=bare_environment(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def frozen_server(executable: Path, archive: Path, *extra: str) -> LiveServer:
    home = archive.parent / "home"
    return LiveServer(
        archive,
        free_port(),
        extra_args=extra,
        program=(str(executable),),
        env=bare_environment(home),
    )


def live(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running: not gone, not a zombie nobody waited for."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running


def command_line(pid: int) -> bytes:
    """The command line of ``pid``; empty if it has ended (the survey's process does)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def wait_until_gone(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running after up to 20 s."""
    deadline = time.monotonic() + 20
    while live(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return live(pids)


def unpacked(home: Path) -> list[Path]:
    """What the executable unpacked into its TMPDIR (PyInstaller's _MEI folder) and left
    there. (A SIGKILLed server also leaves multiprocessing's pymp- folder, as a pip-installed
    one does: nothing of the executable's own.)"""
    return list((home / "tmp").glob("_MEI*"))


@pytest.fixture(scope="module")
def server(executable: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The tutorial's server: the executable on a fresh archive, with the samples."""
    live_server = frozen_server(executable, tmp_path_factory.mktemp("tutorial") / "archive")
    live_server.extra_args = ("--samples",)
    live_server.start()
    yield live_server
    live_server.stop()


@pytest.fixture
def live_server(executable: Path, archive_dir: Path) -> Iterator[LiveServer]:
    started = frozen_server(executable, archive_dir)
    started.start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def imported(executable: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """An archive the executable imported a folder and a zip into; the instances in it."""
    base = tmp_path_factory.mktemp("imported")
    folder = base / "folder"
    folder.mkdir()
    for path in [*SAMPLES.glob("*.dcm"), *map(pydicom_file, IN_FOLDER)]:
        shutil.copy(path, folder / path.name)
    with zipfile.ZipFile(base / "more.zip", "w") as archive_zip:
        for name in IN_ZIP:
            archive_zip.write(pydicom_file(name), name)
    archive = base / "archive"
    done = run(
        executable, base, "import", str(folder), str(base / "more.zip"), "--archive", str(archive)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert unpacked(base) == []
    files = [*SAMPLES.glob("*.dcm"), *map(pydicom_file, IN_FOLDER + IN_ZIP)]
    return archive, [Instance.of(path) for path in files]


# the tests -----------------------------------------------------------------------------------


def test_frozen_version_has_the_default_codecs_and_no_gpl_one(
    executable: Path, tmp_path: Path
) -> None:
    done = run(executable, tmp_path, "--version")

    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[3:]}
    assert done.stdout.startswith(f"localdicom {__version__} (one-file executable)\n")
    assert "pylibjpeg (openjpeg)" in lines[JPEG_2000_LOSSLESS]
    assert "pyjpegls" in lines["1.2.840.10008.1.2.4.80"]
    for uid in ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80"]:
        assert "gdcm" in lines[uid]  # python-gdcm: JPEG and JPEG-LS
    assert "pylibjpeg (rle)" in lines["1.2.840.10008.1.2.5"]
    # pylibjpeg-libjpeg is GPL-3.0 (the gpl-codecs extra): never bundled, installed or not
    assert "(libjpeg)" not in done.stdout
    assert "pylibjpeg-libjpeg" not in done.stdout
    assert unpacked(tmp_path) == []


def test_frozen_serves_the_samples_rendered_the_home_page_and_dicom(
    executable: Path, tmp_path: Path
) -> None:
    dicom_port = free_port()
    started = frozen_server(
        executable, tmp_path / "archive", "--samples", "--dicom-port", str(dicom_port)
    )
    started.start()
    try:
        echo = ["/usr/bin/echoscu", "-aec", "LOCALDICOM", "127.0.0.1", str(dicom_port)]
        assert subprocess.run(echo, capture_output=True, timeout=60).returncode == 0  # pynetdicom
        samples = [Instance.of(path) for path in SAMPLES.glob("*.dcm")]
        assert_serves(started, samples)
        rendered = request(f"{started.url}{samples[0].url_path}/rendered", accept="image/jpeg")
        assert (rendered.status, rendered.body[:2]) == (200, b"\xff\xd8")  # Pillow in a worker
        home = request(f"{started.url}/", accept="text/html")
        assert (home.status, home.content_type.split(";")[0]) == (200, "text/html")
        for path in (REPOSITORY / "localdicom" / "static").iterdir():
            served = request(f"{started.url}/static/{path.name}")
            assert (served.status, served.body) == (200, path.read_bytes()), path.name
    finally:
        started.stop()


def test_frozen_import_ls_and_reindex_as_pip_installed(
    executable: Path, imported: tuple[Path, list], tmp_path: Path
) -> None:
    archive, instances = imported
    for command in (["ls", str(archive), "--series"], ["reindex", str(archive)]):
        frozen = run(executable, tmp_path, *command)
        pip = subprocess.run(
            [sys.executable, "-m", "localdicom", *command], capture_output=True, text=True
        )
        assert (frozen.returncode, frozen.stderr) == (0, ""), frozen.stderr
        assert without_timings(frozen.stdout) == without_timings(pip.stdout)
    assert f"{len(instances)} sidecars rebuilt" in frozen.stdout
    started = frozen_server(executable, archive)
    started.start()
    try:
        assert_serves(started, instances)
    finally:
        started.stop()


def without_timings(output: str) -> str:
    """A command's report without its durations and rates ("in 0.05 s")."""
    return re.sub(r" in [\d.]+ s\b", "", output)


def _decode_in_a_worker(server: LiveServer) -> set[int]:
    """Ask for US1_J2KR's frame decoded, compare it with pydicom's; the processes now
    running below the launcher, among them a forkserver and its workers."""
    ds = pydicom.dcmread(pydicom_file("US1_J2KR.dcm"))
    assert ds.file_meta.TransferSyntaxUID == JPEG_2000_LOSSLESS
    frame = request(
        f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/1",
        accept=f'multipart/related; type="application/octet-stream"; '
        f"transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}",
    )
    assert frame.status == 200, frame.text
    [(_, served)] = frame.parts()
    assert served == native_frames_little_endian(ds, 1)[0]
    assert server.process is not None
    processes = set(process_tree(server.process.pid))
    commands = [command_line(pid) for pid in processes]
    assert sum(b"multiprocessing.forkserver" in command for command in commands) >= 2
    return processes


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL of the launcher", "SIGKILL of the server"])
def test_frozen_decodes_in_a_worker_and_leaves_no_process(
    executable: Path, imported: tuple[Path, list], tmp_path: Path, stop: str
) -> None:
    """A JPEG 2000 frame decoded in a worker process, then the server stopped: SIGTERM to
    the launcher (what Ctrl-C or a service manager does), or SIGKILL (the OOM killer) of the
    launcher, which passes nothing on, or of the server, which then closes nothing."""
    archive = tmp_path / "archive"
    shutil.copytree(imported[0], archive)
    started = frozen_server(executable, archive)
    started.start()
    assert started.process is not None
    launcher = started.process.pid
    processes = _decode_in_a_worker(started)
    if stop == "SIGTERM":
        started.process.send_signal(signal.SIGTERM)
        assert started.process.wait(timeout=30) == 0, started.log.read_text()
    elif stop == "SIGKILL of the launcher":
        started.process.kill()
        started.process.wait(timeout=30)
    else:
        [server] = [
            int(pid)
            for pid in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
        ]
        os.kill(server, signal.SIGKILL)
        started.process.wait(timeout=30)
    started.process = None

    assert wait_until_gone(processes) == set()
    assert unpacked(tmp_path / "home") == []
