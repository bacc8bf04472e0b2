"""``localdicom pull`` and ``push`` between two localdicom servers (DICOMweb), through a
proxy that fails every third request (503, an answer cut in the middle, a request cut before
the server sees it): nothing lost, nothing stored twice, the re-run completes; the bytes at
the destination are those of the original files, instance by instance; no secret in any
output or in the transfer record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from localdicom.archive import open_record
from localdicom.importer import ImportOptions, run_import
from localdicom.selection import Selection
from localdicom.transfer import dicomweb
from localdicom.transfer.dicomweb import Answer, retry_after
from localdicom.transfer.options import TransferOptions
from localdicom.transfer.pull import pull
from localdicom.transfer.push import push, stow_outcomes
from localdicom.transfer.remote import BadRemote, credentials, parse_remote
from tests.helpers import REPOSITORY, SAMPLES, STUDY_UID, free_port, write_series
from tests.helpers.corpus import pydicom_file
from tests.helpers.flaky import flaky
from tests.helpers.live import LiveServer, request

pytestmark = pytest.mark.slow  # servers in subprocesses
SECRET = "s3cret-T0ken-that-must-not-leak"
EVERYTHING = Selection(everything=True)
QUICK = TransferOptions(backoff=0.01, jobs=3)


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    """SOP Instance UID -> original file: the samples, three of pydicom's files in three
    transfer syntaxes, and a small generated series (so that every third request fails
    many times)."""
    folder = tmp_path_factory.mktemp("originals")
    files = sorted(SAMPLES.glob("*.dcm"))
    files += [pydicom_file(name) for name in ("CT_small.dcm", "MR_small_jp2klossless.dcm")]
    files += [pydicom_file("SC_rgb_rle.dcm")]
    files += write_series(folder, "transfer-study", "transfer-series", 12, size=64)
    return {pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID: path for path in files}


@pytest.fixture(scope="module")
def source(tmp_path_factory, originals) -> Iterator[LiveServer]:
    """A server holding the originals, asking for a token."""
    archive = tmp_path_factory.mktemp("source") / "archive"
    server = LiveServer(archive, free_port(), extra_args=("--token", SECRET))
    server.start()
    for path in originals.values():
        reply = request(
            f"{server.url}/studies",
            method="POST",
            data=path.read_bytes(),
            headers={
                "Content-Type": "application/dicom",
                "Authorization": f"Bearer {SECRET}",
            },
        )
        assert reply.status == 200, reply.text
    yield server
    server.stop()


@pytest.fixture
def destination(tmp_path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path / "remote", free_port())
    server.start()
    yield server
    server.stop()


def token() -> object:
    return credentials("http://127.0.0.1", token=SECRET, user=None, password=None, headers=())


def assert_same_bytes(archive: Path, originals: dict[str, Path]) -> None:
    """Every original is in ``archive``, byte for byte, and nothing else is."""
    stored = {path.stem: path for path in archive.glob("*/*/*.dcm")}
    assert stored.keys() == originals.keys()
    for sop, path in originals.items():
        assert stored[sop].read_bytes() == path.read_bytes(), sop


def remote_bytes(server: LiveServer) -> dict[str, bytes]:
    """Each instance as the server sends it with transfer-syntax=* (its stored bytes)."""
    found = {}
    for instance in json.loads(request(f"{server.url}/instances").body):
        study, series, sop = (
            instance[tag]["Value"][0] for tag in ("0020000D", "0020000E", "00080018")
        )
        reply = request(
            f"{server.url}/studies/{study}/series/{series}/instances/{sop}",
            accept='multipart/related; type="application/dicom"; transfer-syntax=*',
        )
        assert reply.status == 200
        assert sop not in found, "stored twice"
        found[sop] = reply.parts()[0][1]
    return found


# pull ---------------------------------------------------------------------------------------


def test_pull_brings_every_instance_as_stored_and_a_rerun_fetches_nothing(
    source, originals, tmp_path
):
    archive = tmp_path / "archive"
    report = pull(source.url, None, archive, EVERYTHING, token(), QUICK)
    assert (report.stored, report.errors, report.conflicts) == (len(originals), [], [])
    assert_same_bytes(archive, originals)
    again = pull(source.url, None, archive, EVERYTHING, token(), QUICK)
    assert (again.stored, again.duplicates, again.size) == (0, len(originals), 0)


def test_pull_of_instances_larger_than_kept_in_memory_streams_them_to_disk(
    source, originals, tmp_path, monkeypatch
):
    """An instance over dicomweb.IN_MEMORY goes to the staging folder as it arrives: the
    same bytes stored, nothing left behind."""
    monkeypatch.setattr(dicomweb, "IN_MEMORY", 1000)
    archive = tmp_path / "archive"
    report = pull(source.url, None, archive, EVERYTHING, token(), QUICK)
    assert (report.stored, report.errors, report.conflicts) == (len(originals), [], [])
    assert_same_bytes(archive, originals)
    assert not list((archive / ".incoming").iterdir())


def test_pull_of_one_series_and_by_query(source, originals, tmp_path):
    series = pydicom.dcmread(next(iter(originals.values()))).SeriesInstanceUID
    expected = {
        sop for sop, path in originals.items() if pydicom.dcmread(path).SeriesInstanceUID == series
    }
    report = pull(source.url, None, tmp_path / "a", Selection(series=(series,)), token(), QUICK)
    assert {p.stem for p in (tmp_path / "a").glob("*/*/*.dcm")} == expected
    assert report.stored == len(expected)
    by_modality = Selection(queries=(("Modality", "MR"),))
    pull(source.url, None, tmp_path / "b", by_modality, token(), QUICK)
    expected = {sop for sop, path in originals.items() if pydicom.dcmread(path).Modality == "MR"}
    assert {p.stem for p in (tmp_path / "b").glob("*/*/*.dcm")} == expected


@pytest.mark.parametrize("mode", ["503", "cut-answer"])
def test_pull_through_a_failing_remote_loses_nothing(source, originals, tmp_path, mode):
    archive = tmp_path / "archive"
    with flaky(source.url, mode) as proxy:
        report = pull(proxy.url, None, archive, EVERYTHING, token(), QUICK)
    assert proxy.failed >= 3
    assert (report.stored, report.errors) == (len(originals), []), report.lines()
    assert report.retries >= proxy.failed
    assert_same_bytes(archive, originals)


def test_pull_of_series_whose_answers_are_all_cut_lists_and_fetches_them_singly(
    source, originals, tmp_path
):
    """Every series retrieve (PS3.18 10.4.1, /studies/{s}/series/{se}) cut in the middle:
    what arrived whole is kept, the rest is listed and fetched instance by instance."""
    archive = tmp_path / "archive"
    with flaky(source.url, "cut-answer", every=1, only=r"/series/[0-9.]+$") as proxy:
        report = pull(proxy.url, None, archive, EVERYTHING, token(), QUICK)
    assert proxy.failed >= 2  # the series of more than one instance (others are small)
    assert (report.stored, report.duplicates, report.errors) == (len(originals), 0, [])
    assert_same_bytes(archive, originals)


def test_pull_into_an_archive_a_server_runs_on_goes_through_it(source, originals, destination):
    report = pull(source.url, None, destination.archive, EVERYTHING, token(), QUICK)
    assert report.server == destination.url
    assert report.stored == len(originals)
    assert_same_bytes(destination.archive, originals)
    found = json.loads(request(f"{destination.url}/instances").body)
    assert len(found) == len(originals)  # served at once, without a restart


def test_pull_keeps_a_different_stored_instance_as_a_conflict(source, originals, tmp_path):
    archive = tmp_path / "archive"
    sop, path = next(iter(originals.items()))
    changed = pydicom.dcmread(path)
    changed.PatientName = "CHANGED^HERE"
    changed.save_as(tmp_path / "changed.dcm")
    assert run_import([tmp_path / "changed.dcm"], archive).stored == 1
    report = pull(source.url, None, archive, EVERYTHING, token(), QUICK)
    assert [label.rsplit("/", 1)[1] for label, _ in report.conflicts] == [sop]
    assert report.exit_code == 1
    assert pydicom.dcmread(next(archive.glob(f"*/*/{sop}.dcm"))).PatientName == "CHANGED^HERE"
    forced = pull(source.url, None, archive, EVERYTHING, token(), TransferOptions(overwrite=True))
    assert forced.stored == 1
    assert_same_bytes(archive, originals)


# push ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(tmp_path_factory, originals) -> Path:
    archive = tmp_path_factory.mktemp("local") / "archive"
    assert run_import(list(originals.values()), archive, ImportOptions(workers=1)).exit_code == 0
    return archive


def copy_of(archive: Path, tmp_path: Path) -> Path:
    """The archive without its transfer record (each push test starts afresh)."""
    target = tmp_path / "local"
    subprocess.run(["cp", "-r", str(archive), str(target)], check=True)
    subprocess.run(["rm", "-rf", str(target / ".transfers")], check=True)
    return target


def test_push_sends_every_instance_as_stored_in_batches(local, originals, destination, tmp_path):
    archive = copy_of(local, tmp_path)
    options = TransferOptions(batch_bytes=1_000_000, backoff=0.01)
    report = push(destination.url, None, archive, EVERYTHING, token(), options)
    assert (report.stored, report.errors) == (len(originals), [])
    sent = remote_bytes(destination)
    assert {sop: data for sop, data in sent.items()} == {
        sop: path.read_bytes() for sop, path in originals.items()
    }
    again = push(destination.url, None, archive, EVERYTHING, token(), options)
    assert (again.stored, again.duplicates) == (0, len(originals))


@pytest.mark.parametrize("mode", ["503", "cut-request", "cut-answer"])
def test_push_through_a_failing_remote_stores_each_once(
    local, originals, destination, tmp_path, mode
):
    archive = copy_of(local, tmp_path)
    options = TransferOptions(batch_bytes=20_000, backoff=0.01, jobs=2)
    with flaky(destination.url, mode) as proxy:
        report = push(proxy.url, None, archive, EVERYTHING, token(), options)
        again = push(proxy.url, None, archive, EVERYTHING, token(), options)
    assert proxy.failed >= 2
    assert report.errors == [] and report.stored + report.duplicates == len(originals)
    sent = remote_bytes(destination)
    assert sent == {sop: path.read_bytes() for sop, path in originals.items()}
    assert (again.stored, again.duplicates) == (0, len(originals))  # the record: nothing sent


def test_push_of_an_instance_changed_since_is_a_conflict(local, originals, destination, tmp_path):
    archive = copy_of(local, tmp_path)
    selection = Selection(studies=(STUDY_UID,))
    assert push(destination.url, None, archive, selection, token(), QUICK).stored == 3
    path = next(iter(archive.glob(f"{STUDY_UID}/*/*.dcm")))
    changed = pydicom.dcmread(path)
    changed.PatientName = "CHANGED^HERE"
    changed.save_as(tmp_path / "changed.dcm")
    run_import([tmp_path / "changed.dcm"], archive, ImportOptions(overwrite=True))
    report = push(destination.url, None, archive, selection, token(), QUICK)
    assert [label.rsplit("/", 1)[1] for label, _ in report.conflicts] == [path.stem]
    assert (report.duplicates, report.exit_code) == (2, 1)


def test_push_to_a_dicomweb_remote_starts_without_pydicom_numpy_or_pynetdicom(
    local, originals, destination, tmp_path
):
    """It sends the stored files as they are: importing those took 0.4 s of the 0.75 s
    before its first request. Python's own ``-X importtime`` lists every module imported."""
    archive = copy_of(local, tmp_path)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "localdicom", "push", destination.url,
         "-a", str(archive), "--all"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(remote_bytes(destination)) == len(originals)
    imported = [
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    ]
    assert "localdicom.transfer.push" in imported  # what importtime lists is what ran
    assert {name.split(".")[0] for name in imported}.isdisjoint({"pydicom", "numpy", "pynetdicom"})


# the command, its secrets and its dry run ---------------------------------------------------


def localdicom(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "localdicom", *args],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_no_secret_in_output_or_record(source, originals, tmp_path):
    archive = tmp_path / "archive"
    done = localdicom("pull", source.url, "-a", str(archive), "--all", "--token", SECRET)
    assert done.returncode == 0, done.stderr
    refused = localdicom(
        "pull", source.url, "-a", str(archive), "--all",
        "--user", "someone", "--password", f"{SECRET}x", "--header", f"X-Api-Key: {SECRET}y",
    )  # fmt: skip
    assert refused.returncode == 1
    assert "401" in refused.stdout
    by_environment = localdicom(
        "push", source.url, "-a", str(archive), "--all", "-v",
        env={"LOCALDICOM_REMOTE_TOKEN": SECRET},
    )  # fmt: skip
    assert by_environment.returncode == 0, by_environment.stdout
    for run in (done, refused, by_environment):
        assert SECRET not in run.stdout + run.stderr
    for path in archive.rglob("*"):
        if path.is_file() and path.suffix != ".dcm":
            assert SECRET.encode() not in path.read_bytes(), path


def test_ctrl_c_stops_between_instances_and_the_rerun_finishes(source, originals, tmp_path):
    """SIGINT: exit 130, whole instances only, the record saved; the same command again
    stores the rest and nothing twice."""
    archive = tmp_path / "archive"
    with flaky(source.url, "slow") as proxy:
        command = [sys.executable, "-m", "localdicom", "pull", proxy.url, "-a", str(archive)]
        command += ["--all", "-j", "1"]
        env = {**os.environ, "LOCALDICOM_REMOTE_TOKEN": SECRET}
        running = subprocess.Popen(
            command, cwd=REPOSITORY, env=env, stdout=subprocess.PIPE, text=True
        )
        while len(list(archive.glob("*/*/*.dcm"))) < 2 and running.poll() is None:
            time.sleep(0.05)
        running.send_signal(signal.SIGINT)
        output, _ = running.communicate(timeout=60)
        assert running.returncode == 130, output
        assert output.startswith("Interrupted") and "Run the same command again" in output
        first = len(list(archive.glob("*/*/*.dcm")))
        assert 2 <= first < len(originals)
        assert not list((archive / ".incoming").iterdir())
        again = localdicom("pull", proxy.url, "-a", str(archive), "--all", "--token", SECRET)
    assert again.returncode == 0, again.stdout
    counts = dict(line.strip().rsplit(None, 1) for line in again.stdout.splitlines()[1:5])
    assert (int(counts["stored"]), int(counts["already there"])) == (len(originals) - first, first)
    assert_same_bytes(archive, originals)


def test_secret_in_the_url_is_taken_out_and_hidden():
    address, _, userinfo = parse_remote(f"https://me:{SECRET}@pacs.example/dicom-web/")
    assert (address, userinfo) == ("https://pacs.example/dicom-web", ("me", SECRET))
    given = credentials(
        address, token=None, user=None, password=None, headers=(), from_url=userinfo
    )
    assert given.headers["Authorization"].startswith("Basic ")
    shown = given.hide(f"401 for {SECRET} and {given.headers['Authorization']}")
    assert SECRET not in shown and given.headers["Authorization"][6:] not in shown


def test_netrc_gives_basic_credentials(tmp_path, monkeypatch):
    (tmp_path / "netrc").write_text(f"machine pacs.example login me password {SECRET}\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    given = credentials("https://pacs.example/x", token=None, user=None, password=None, headers=())
    assert (
        given.headers["Authorization"]
        == "Basic " + __import__("base64").b64encode(f"me:{SECRET}".encode()).decode()
    )
    other = credentials("https://other.example/x", token=None, user=None, password=None, headers=())
    assert other.headers == {}


def test_dry_run_lists_and_moves_nothing(source, originals, local, tmp_path):
    archive = tmp_path / "archive"
    listed = localdicom("pull", source.url, "-a", str(archive), "--all", "-n", "--token", SECRET)
    assert listed.returncode == 0, listed.stderr
    assert f"Would be pulled: {len(originals)} instances" in listed.stdout
    series = {pydicom.dcmread(path).SeriesInstanceUID for path in originals.values()}
    assert all(uid in listed.stdout for uid in series)  # an empty archive: whole series
    assert not list(archive.glob("*/*/*.dcm"))
    pushed = localdicom("push", "http://127.0.0.1:9", "-a", str(local), "--all", "--dry-run")
    assert pushed.returncode == 0 and f"Would be pushed: {len(originals)}" in pushed.stdout
    assert open_record(local, "http://127.0.0.1:9").moved == {}


def test_bad_remote_is_a_usage_error(local):
    done = localdicom("push", "ftp://somewhere", "-a", str(local), "--all")
    assert done.returncode == 2 and "dicom://AE@host:port" in done.stderr
    with pytest.raises(BadRemote):
        parse_remote("dicom://host:4242")


# what remotes answer (PS3.18 10.5.3, Azure's codes) -------------------------------------------


def stow_answer(status: int, referenced=(), failed=(), warning: int | None = None) -> Answer:
    body: dict = {}
    if referenced:
        items = [{"00081155": {"vr": "UI", "Value": [sop]}} for sop in referenced]
        if warning is not None:
            for item in items:
                item["00081196"] = {"vr": "US", "Value": [warning]}
        body["00081199"] = {"vr": "SQ", "Value": items}
    if failed:
        body["00081198"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081155": {"vr": "UI", "Value": [sop]},
                    "00081197": {"vr": "US", "Value": [code]},
                }
                for sop, code in failed
            ],
        }
    return Answer(status, "", json.dumps(body).encode() if body else b"")


def test_duplicate_answers_count_as_already_there():
    answer = stow_answer(202, referenced=["1.1", "1.4"], failed=[("1.2", 0x0111), ("1.3", 0xA700)])
    outcomes = stow_outcomes(answer, ["1.1", "1.2", "1.3", "1.4"])
    assert outcomes["1.1"] == ("stored", "")
    assert outcomes["1.2"] == ("already there", "")
    assert outcomes["1.3"][0] is None and "0xA700" in outcomes["1.3"][1]
    azure = stow_outcomes(stow_answer(409, failed=[("1.1", 45070)]), ["1.1"])
    assert azure == {"1.1": ("already there", "")}
    warned = stow_outcomes(stow_answer(202, referenced=["1.1"], warning=45070), ["1.1"])
    assert warned == {"1.1": ("already there", "")}
    assert stow_outcomes(Answer(409, "", b"conflict"), ["1.1"]) == {"1.1": ("already there", "")}
    assert stow_outcomes(Answer(409, "", b"conflict"), ["1.1", "1.2"]) is None  # then singly
    assert stow_outcomes(Answer(413, "", b""), ["1.1", "1.2"]) is None
    assert stow_outcomes(Answer(200, "", b""), ["1.1"]) == {"1.1": ("stored", "")}


def test_retry_after_in_seconds_or_as_a_date():
    assert retry_after("7") == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after(None) is None and retry_after("soon") is None
