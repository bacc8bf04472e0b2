"""``serve --on-stable-study CMD``: CMD runs for a study once no instance of it arrived for
``--stable-seconds``, again after more arrive, never for a deletion, and a failing CMD never
stops the server. Waits are for events (a file written by CMD, a log line), never timings."""

from __future__ import annotations

import io
import json
import re
import shlex
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from localdicom.cli import main
from tests.helpers import ct_slice, free_port, uid
from tests.helpers.dimse import wait_for
from tests.helpers.live import LiveServer, request, stow_bytes

#: Writes the LOCALDICOM_* environment it was run with as one JSON line.
RECORDER = textwrap.dedent(
    """
    import json, os, sys
    seen = {k: v for k, v in os.environ.items() if k.startswith("LOCALDICOM_")}
    with open(sys.argv[1], "a") as fp:
        fp.write(json.dumps(seen) + "\\n")
    """
)


def send(server: LiveServer, study: str, series: str, index: int) -> None:
    buffer = io.BytesIO()
    ct_slice(study, series, index, size=16).save_as(buffer, enforce_file_format=True)
    reply = stow_bytes(server.url, buffer.getvalue())
    assert reply.status == 200, reply.text


def runs(record: Path) -> list[dict]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.endswith("}")]


@pytest.fixture
def recording(tmp_path: Path):
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    record = tmp_path / "runs.jsonl"
    command = shlex.join([sys.executable, str(script), str(record)])
    server = LiveServer(
        tmp_path / "archive",
        free_port(),
        extra_args=("--on-stable-study", command, "--stable-seconds", "0.3"),
    )
    server.start()
    yield server, record
    server.stop()


@pytest.mark.slow
def test_runs_once_per_stable_period_with_the_uids_in_its_environment(recording) -> None:
    server, record = recording
    for index in range(3):
        send(server, "stable-a", "stable-a-1", index)
    wait_for(lambda: len(runs(record)) == 1, "the command ran for study A")
    (first,) = runs(record)
    assert first["LOCALDICOM_STUDY_UID"] == uid("stable-a")
    assert first["LOCALDICOM_ARCHIVE"] == str(server.archive.resolve())
    assert first["LOCALDICOM_URL"] == server.url

    send(server, "stable-b", "stable-b-1", 0)
    send(server, "stable-a", "stable-a-2", 0)  # more for A: it runs again
    wait_for(lambda: len(runs(record)) == 3, "the command ran for B and again for A")

    assert _studies(record) == Counter({uid("stable-a"): 2, uid("stable-b"): 1})

    # A deletion in A is not an arrival: only C's run follows. Runs start in the order their
    # studies became stable, each logged as it starts: once C's is, A's would have been.
    sop = uid("stable-a-2/0")
    url = f"{server.url}/studies/{uid('stable-a')}/series/{uid('stable-a-2')}/instances/{sop}"
    assert request(url, method="DELETE").status == 204
    send(server, "stable-c", "stable-c-1", 0)
    wait_for(lambda: _started(server)[uid("stable-c")] == 1, "the command started for C")
    assert _started(server) == Counter({uid("stable-a"): 2, uid("stable-b"): 1, uid("stable-c"): 1})


def _studies(record: Path) -> Counter:
    return Counter(run["LOCALDICOM_STUDY_UID"] for run in runs(record))


def _started(server: LiveServer) -> Counter:
    return Counter(re.findall(r"study ([\d.]+) is stable: running", server.log.read_text()))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "logged"),
    [
        (shlex.join([sys.executable, "-c", "import sys; sys.exit(3)"]), "exited with status 3"),
        ("/nonexistent/segment-it", "could not run"),
    ],
)
def test_a_failing_command_is_logged_and_the_server_keeps_serving(
    tmp_path: Path, command: str, logged: str
) -> None:
    server = LiveServer(
        tmp_path / "archive",
        free_port(),
        extra_args=("--on-stable-study", command, "--stable-seconds", "0.2"),
    )
    server.start()
    try:
        send(server, "failing", "failing-1", 0)
        wait_for(lambda: logged in server.log.read_text(), f"the log says {logged!r}")
        send(server, "failing", "failing-1", 1)
        reply = request(f"{server.url}/changefeed/latest?includemetadata=false")
        assert reply.status == 200 and json.loads(reply.body)["Sequence"] == 2
    finally:
        server.stop()


@pytest.mark.parametrize("command", ["'unclosed quote", ""])
def test_a_command_that_does_not_split_into_words_is_a_usage_error(
    tmp_path: Path, command: str
) -> None:
    archive = tmp_path / "archive"
    result = CliRunner().invoke(main, ["serve", str(archive), "--on-stable-study", command])
    assert result.exit_code == 2
    assert "--on-stable-study" in result.output and len(result.output.splitlines()) == 1
    assert not archive.exists()  # refused before anything started
