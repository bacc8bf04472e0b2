"""``localdicom push --follow``: while a server runs on the archive, what it receives reaches a
second localdicom study by study, byte for byte; SIGTERM ends the push cleanly (130, no
traceback); a restart reads on from the offset in the record and sends nothing twice; a
deletion is told, not sent; a feed that no longer holds the saved offset means a full
pass. Waits are for events (the remote's QIDO-RS, a line of the push), never timings."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from localdicom.archive import Change, ChangeFeed, Layout, open_record
from localdicom.cli import main
from localdicom.importer import run_import
from localdicom.selection import Selection
from localdicom.transfer.follow import Follow, selection_key
from localdicom.transfer.options import TransferOptions
from localdicom.transfer.push import push
from localdicom.transfer.remote import Credentials
from tests.helpers import REPOSITORY, ct_slice, free_port, write_series
from tests.helpers.dimse import wait_for
from tests.helpers.live import LiveServer, request, stow_bytes
from tests.test_transfer import remote_bytes

pytestmark = pytest.mark.slow  # servers in subprocesses
WAIT = 180  # generous: a shared machine


@pytest.fixture
def servers(tmp_path) -> Iterator[tuple[LiveServer, LiveServer]]:
    source = LiveServer(tmp_path / "source", free_port())
    remote = LiveServer(tmp_path / "remote", free_port())
    source.start()
    remote.start()
    yield source, remote
    source.stop()
    remote.stop()


def stow_study(server: LiveServer, name: str, count: int) -> dict[str, bytes]:
    """A new study of ``count`` slices STOWed to ``server``: SOP Instance UID -> bytes."""
    sent = {}
    for index in range(count):
        dataset = ct_slice(f"follow-{name}", f"follow-{name}-series", index, size=16)
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        reply = stow_bytes(server.url, buffer.getvalue())
        assert reply.status == 200, reply.text
        sent[dataset.SOPInstanceUID] = buffer.getvalue()
    return sent


def qido_sops(server: LiveServer) -> set[str]:
    found = json.loads(request(f"{server.url}/instances").body or b"[]")
    return {match["00080018"]["Value"][0] for match in found}


class Following:
    """``push --follow`` in a subprocess, its output in files."""

    def __init__(self, source: LiveServer, remote: LiveServer, folder: Path, name: str) -> None:
        self.out, self.err = folder / f"{name}.out", folder / f"{name}.err"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "localdicom", "push", remote.url, "--archive",
             str(source.archive), "--all", "--follow", "--stable-seconds", "1"],
            cwd=REPOSITORY, stdout=self.out.open("wb"), stderr=self.err.open("wb"),
        )  # fmt: skip

    def said(self) -> str:
        return self.err.read_text()

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=WAIT)
        return code, self.out.read_text()


def counts(output: str) -> dict[str, int]:
    found = re.findall(r"^  (stored|already there|conflicts|errors) +(\d+)$", output, re.M)
    return {name: int(number) for name, number in found}


def test_follow_pushes_each_study_once_stops_on_sigterm_and_resumes(servers, tmp_path) -> None:
    source, remote = servers
    following = Following(source, remote, tmp_path, "first")
    wait_for(lambda: "Following the change feed" in following.said(), "the first pass", WAIT)

    first = stow_study(source, "first", 3)
    wait_for(lambda: set(first) <= qido_sops(remote), "the first study at the remote", WAIT)
    second = stow_study(source, "second", 2)
    wait_for(lambda: set(second) <= qido_sops(remote), "the second study at the remote", WAIT)
    assert remote_bytes(remote) == first | second  # byte for byte

    code, summary = following.stop()
    assert code == 130, following.said()
    assert "Traceback" not in following.said() + summary
    assert counts(summary)["stored"] == 5 and summary.startswith("Stopped following")

    third = stow_study(source, "third", 2)  # while no push runs: read from the saved offset
    study = json.loads(request(f"{source.url}/instances").body)
    deleted = next(m["0020000D"]["Value"][0] for m in study if m["00080018"]["Value"][0] in first)
    assert request(f"{source.url}/studies/{deleted}", method="DELETE").status in (200, 204)
    again = Following(source, remote, tmp_path, "again")
    wait_for(lambda: set(third) <= qido_sops(remote), "the third study at the remote", WAIT)
    wait_for(lambda: "Deleted here, not at the remote" in again.said(), "the deletion", WAIT)
    code, summary = again.stop()

    assert code == 130 and "Traceback" not in again.said() + summary
    assert "Following the change feed from change" in again.said()
    assert "Sending what the record lacks" not in again.said()  # resumed, no full pass
    assert counts(summary)["stored"] == 2 and counts(summary)["already there"] == 0
    assert remote_bytes(remote) == first | second | third  # the deletion was not sent
    feed = json.loads(
        request(f"{remote.url}/changefeed?offset=0&limit=100&includemetadata=false").body
    )
    created = Counter(entry["SopInstanceUid"] for entry in feed if entry["Action"] == "create")
    assert created == Counter(list(first | second | third)) and len(feed) == len(created)


@pytest.mark.parametrize("gap", ["began again", "retention dropped it"])
def test_a_feed_without_the_saved_offset_means_a_full_pass(servers, tmp_path, gap) -> None:
    _, remote = servers
    archive = tmp_path / "archive"
    files = write_series(tmp_path / "in", "follow-gap", "follow-gap-series", 3, size=16)
    assert run_import(files, archive).exit_code == 0
    everything = Selection(everything=True)
    record = open_record(archive, remote.url)
    record.offsets[selection_key(everything)] = 10**6 if gap == "began again" else 1
    record.save()
    if gap == "retention dropped it":  # changes 1 to 3 and more are dropped
        small = ChangeFeed(Layout(archive).changefeed, segment_entries=2, segments_kept=2)
        for index in range(8):
            small.append([Change("delete", "1.9", "1.9.1", f"1.9.1.{index}", "1.9.9")], False)
        assert small.dropped().last > 1
    said: list[str] = []

    def say(line: str) -> None:  # stops once it follows
        said.append(line)
        if line.startswith("Following"):
            os.kill(os.getpid(), signal.SIGTERM)

    report = push(remote.url, None, archive, everything, Credentials(), TransferOptions(),
                  follow=Follow(1, say))  # fmt: skip

    assert said[0] == "Sending what the record lacks of the whole selection."
    assert report.stored == 3 and report.interrupted
    latest = ChangeFeed.of(archive).latest().sequence
    assert open_record(archive, remote.url).offsets[selection_key(everything)] == latest


def test_follow_does_not_go_with_dry_run(tmp_path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    result = CliRunner().invoke(
        main, ["push", "http://127.0.0.1:9", "-a", str(archive), "--all", "--follow", "-n"]
    )
    assert result.exit_code == 2 and "--dry-run" in result.output
