"""The archive folder is the whole state: a restarted server serves what it stored before.

Every test runs ``localdicom serve`` in a subprocess (the ``live_server`` fixture), stores
instances over HTTP, stops the server, changes the folder by hand the way a user might, and
starts it again on the same folder.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
import requests

from localdicom.archive.held import HELD_BYTES
from tests.helpers.http import raw_stow
from tests.helpers.served import (
    AS_STORED,
    DICOM_JSON,
    Instance,
    assert_serves,
    get,
    listed_sops,
    log_since,
    sample,
    search,
    store_all,
)

#: Each test starts, stops and starts a live server: seconds each.
pytestmark = pytest.mark.slow


def snapshot(server, instances: list[Instance]) -> dict[str, Any]:
    """All the server says about ``instances``: QIDO results, metadata and stored bytes."""
    return {
        "studies": search(server, "studies"),
        "series": search(server, "series"),
        "instances": search(server, "instances"),
        "metadata": {
            i.sop: get(server, f"{i.url_path}/metadata", DICOM_JSON).json() for i in instances
        },
        "bytes": {i.sop: get(server, i.url_path, AS_STORED).content for i in instances},
    }


@pytest.fixture
def stored(live_server) -> list[Instance]:
    return store_all(live_server)


# tests -----------------------------------------------------------------------------------


def test_everything_is_served_after_a_restart(live_server, stored) -> None:
    before = snapshot(live_server, stored)

    live_server.restart()

    assert_serves(live_server, stored)
    assert snapshot(live_server, stored) == before


def test_deleted_sidecar_is_regenerated(live_server, archive_dir, stored) -> None:
    instance = sample(stored, "red-triangle.dcm")
    sidecar = instance.sidecar(archive_dir)
    original = sidecar.read_bytes()
    metadata = get(live_server, f"{instance.url_path}/metadata", DICOM_JSON).json()
    live_server.stop()

    sidecar.unlink()
    live_server.start()

    assert sidecar.read_bytes() == original
    assert get(live_server, f"{instance.url_path}/metadata", DICOM_JSON).json() == metadata
    assert_serves(live_server, stored)


def test_corrupt_sidecar_is_regenerated(live_server, archive_dir, stored) -> None:
    instance = sample(stored, "emri_small.dcm")
    sidecar = instance.sidecar(archive_dir)
    original = sidecar.read_bytes()
    metadata = get(live_server, f"{instance.url_path}/metadata", DICOM_JSON).json()
    live_server.stop()

    sidecar.write_bytes(b'{"format": 1, "size": \x00\xff garbage')
    live_server.start()

    assert sidecar.read_bytes() == original
    assert get(live_server, f"{instance.url_path}/metadata", DICOM_JSON).json() == metadata
    frame = get(live_server, f"{instance.url_path}/frames/10", "application/octet-stream")
    assert len(frame.content) == 64 * 64 * 2
    assert_serves(live_server, stored)


def test_sidecar_without_its_dcm_is_removed(live_server, archive_dir, stored) -> None:
    removed = sample(stored, "red-triangle.dcm")
    other = sample(stored, "green-square.dcm")
    orphan = removed.sidecar(archive_dir)
    planted = other.dcm(archive_dir).with_name("1.2.3.4.5.json")  # a sidecar of no file
    live_server.stop()

    removed.dcm(archive_dir).unlink()
    planted.write_bytes(other.sidecar(archive_dir).read_bytes())
    live_server.start()

    assert not orphan.exists()
    assert not planted.exists()
    assert removed.sop not in listed_sops(live_server)
    response = requests.get(live_server.url + removed.url_path, timeout=30)
    assert response.status_code == 404
    assert_serves(live_server, [i for i in stored if i is not removed])


def test_non_dicom_file_is_skipped_and_left_alone(live_server, archive_dir, stored) -> None:
    series_folder = sample(stored, "blue-circle.dcm").dcm(archive_dir).parent
    stranger = series_folder / "x.dcm"
    content = b"not a DICOM file, just text someone saved here\n"
    live_server.stop()
    log_offset = live_server.log.stat().st_size

    stranger.write_bytes(content)
    live_server.start()

    log = log_since(live_server, log_offset)
    assert any("skipped" in line and str(stranger.resolve()) in line for line in log.splitlines())
    assert_serves(live_server, stored)
    assert stranger.read_bytes() == content
    assert not stranger.with_suffix(".json").exists()


def test_leftover_temporary_files_are_removed(live_server, archive_dir, stored) -> None:
    instance = sample(stored, "CT_small.dcm")
    part = archive_dir / ".incoming" / "0f1e2d3c4b5a69788796a5b4c3d2e1f0.part"
    temporary = instance.dcm(archive_dir).with_name(f".{instance.sop}.json.0123abcd.tmp")
    live_server.stop()

    part.write_bytes(b"half an upload")
    temporary.write_bytes(b'{"half": "a sidecar')
    live_server.start()

    assert not part.exists()
    assert not temporary.exists()
    assert_serves(live_server, stored)


def test_a_stalled_upload_does_not_hold_a_stopping_server(live_server, archive_dir) -> None:
    """Ctrl-C or SIGTERM gives the requests in progress a few seconds, then cancels them: a
    client stalled mid-upload, which --upload-timeout would end only after 60 s, does not
    keep the server running that long, and its partial upload is deleted."""
    head = raw_stow('multipart/related; type="application/dicom"; boundary=stalled', 1 << 30)
    head += b"--stalled\r\nContent-Type: application/dicom\r\n\r\n"
    incoming = archive_dir / ".incoming"
    with socket.create_connection(("127.0.0.1", live_server.port)) as sock:
        sock.sendall(head + bytes(HELD_BYTES + (1 << 20)))  # past what is held in memory
        while not (incoming.is_dir() and any(p.stat().st_size for p in incoming.iterdir())):
            time.sleep(0.05)  # the server is writing the upload: it is mid-request
        live_server.process.terminate()
        live_server.process.wait(timeout=120)
    log = live_server.log.read_text()
    assert "sent nothing for" not in log  # stopped before the upload's idle timeout ended it
    assert list(incoming.iterdir()) == []
