"""Startup on a damaged archive: the server starts, serves everything intact, repairs what it
can, and reports the rest in one summary.

tests/test_restart.py checks each repair alone; here every kind of damage is done at once
(as after a crash, a bad copy or a user's tidying) and the startup summary is read:

    startup check: N sidecars regenerated, M leftovers of interrupted writes removed,
    K files or folders not served (left as they are):
      skipped PATH: reason
      ...

Unreadable files and folders need permissions that apply to the server: as root the server
is started without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (``setpriv``), so that mode 000
means what it says; the test is skipped where that is not possible.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.helpers import free_port
from tests.helpers.live import LiveServer
from tests.helpers.served import (
    AS_STORED,
    DICOM_JSON,
    assert_serves,
    get,
    listed_sops,
    log_since,
    sample,
    store_all,
)

#: A File Meta group length of 1002 bytes for a 4-byte value: pydicom raises its own
#: BytesLengthException (not a ValueError) while parsing it.
HOSTILE_META = bytes(128) + b"DICM" + b"\x02\x00\x00\x00UL" + struct.pack("<H", 1002) + bytes(1002)


def startup_summary(server: LiveServer, offset: int) -> tuple[str, dict[str, str]]:
    """The summary's first line, and each skipped path with its reason."""
    lines = log_since(server, offset).splitlines()
    starts = [n for n, line in enumerate(lines) if "startup check:" in line]
    if not starts:
        return "", {}
    assert len(starts) == 1, "more than one summary"
    head, skipped = lines[starts[0]], {}
    for line in lines[starts[0] + 1 :]:
        if not line.startswith("  skipped "):
            break
        path, _, reason = line.removeprefix("  skipped ").partition(": ")
        skipped[path] = reason
    return head, skipped


@pytest.mark.slow
def test_every_kind_of_damage_at_once(live_server: LiveServer, archive_dir: Path):
    stored = store_all(live_server)
    corrupt = sample(stored, "emri_small.dcm")  # its sidecar is garbage: regenerated
    no_sidecar = sample(stored, "red-triangle.dcm")  # its sidecar is gone: regenerated
    no_dcm = sample(stored, "CT_small.dcm")  # its .dcm is gone: the sidecar is removed
    half = sample(stored, "MR_small.dcm")  # cut to half, sidecar gone: reported, not served
    intact = [i for i in stored if i not in (no_dcm, half)]
    blue_folder = sample(stored, "blue-circle.dcm").dcm(archive_dir).parent
    misplaced = blue_folder / f"{sample(stored, 'rtplan.dcm').sop}.dcm"
    strangers = {
        blue_folder / "1.2.3.4.dcm": b"not DICOM: a note someone saved here\n",
        blue_folder / "1.2.3.5.dcm": HOSTILE_META,
        misplaced: sample(stored, "rtplan.dcm").file.read_bytes(),
    }
    fifo = blue_folder / "1.2.3.6.dcm"  # reading a FIFO would block the startup for ever
    folder_named_dcm = blue_folder / "1.2.3.7.dcm"
    notes = blue_folder / "notes.txt"
    leftovers = [
        archive_dir / ".incoming" / "0f1e2d3c4b5a69788796a5b4c3d2e1f0.part",
        corrupt.dcm(archive_dir).with_name(f".{corrupt.sop}.json.0123abcd.tmp"),
        archive_dir / ".index-snapshot.89abcdef.tmp",
        archive_dir / ".cache" / "thumbnails" / ".x_128.0123.tmp",
    ]
    live_server.stop()
    offset = live_server.log.stat().st_size

    corrupt.sidecar(archive_dir).write_bytes(b'{"format": 1, "size": \x00\xff garbage')
    no_sidecar.sidecar(archive_dir).unlink()
    no_dcm.dcm(archive_dir).unlink()
    data = half.dcm(archive_dir).read_bytes()
    half.dcm(archive_dir).write_bytes(data[: len(data) // 2])
    half.sidecar(archive_dir).unlink()
    for path, content in strangers.items():
        path.write_bytes(content)
    os.mkfifo(fifo)
    folder_named_dcm.mkdir()
    notes.write_text("notes")
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    live_server.start()  # raises unless it answers within its wait: the FIFO is not read

    assert_serves(live_server, intact)
    assert no_sidecar.sidecar(archive_dir).is_file()
    assert not no_dcm.sidecar(archive_dir).exists()
    for instance in (corrupt, no_sidecar):
        metadata = get(live_server, f"{instance.url_path}/metadata", DICOM_JSON).json()
        assert metadata[0]["00080018"]["Value"] == [instance.sop]
    for instance in (no_dcm, half):
        assert requests.get(live_server.url + instance.url_path, timeout=30).status_code == 404
    head, skipped = startup_summary(live_server, offset)
    assert "2 sidecars regenerated" in head
    assert "5 leftovers of interrupted writes removed" in head  # 4 files, 1 orphan sidecar
    assert "6 files or folders not served" in head
    expected = {half.dcm(archive_dir), *strangers, fifo, folder_named_dcm}
    assert set(skipped) == {str(path) for path in expected}
    assert "truncated" in skipped[str(half.dcm(archive_dir))]
    assert "not a regular file" in skipped[str(fifo)]
    assert "not a readable DICOM Part 10 file" in skipped[str(blue_folder / "1.2.3.5.dcm")]
    assert "its UIDs place it at" in skipped[str(misplaced)]
    # what was not repaired is left exactly as it was; the leftovers are gone
    assert half.dcm(archive_dir).read_bytes() == data[: len(data) // 2]
    assert all(path.read_bytes() == content for path, content in strangers.items())
    assert stat.S_ISFIFO(fifo.stat().st_mode) and folder_named_dcm.is_dir()
    assert notes.read_text() == "notes"
    assert not any(path.exists() for path in leftovers)

    offset = live_server.log.stat().st_size
    live_server.restart()  # the repairs held: only what cannot be served is reported again
    head, skipped_again = startup_summary(live_server, offset)
    assert "0 sidecars regenerated, 0 leftovers" in head
    assert skipped_again == skipped
    assert_serves(live_server, intact)


# unreadable files and folders ------------------------------------------------------------

DROP = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def unprivileged_prefix() -> list[str] | None:
    """A command prefix under which mode 000 denies reading; None if there is none."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    probe = subprocess.run(
        [*DROP, sys.executable, "-c", "open('/proc/self/status').read()"],
        capture_output=True,
        check=False,
    )
    return DROP if probe.returncode == 0 else None


@pytest.mark.slow
@pytest.mark.external
def test_unreadable_files_and_folders(archive_dir: Path):
    prefix = unprivileged_prefix()
    if prefix is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to apply")
    server = LiveServer(archive_dir, free_port(), command_prefix=tuple(prefix))
    server.start()
    locked: list[Path] = []
    try:
        stored = store_all(server)
        green = sample(stored, "green-square.dcm")  # .dcm unreadable, sidecar deleted
        red = sample(stored, "red-triangle.dcm")  # same series: .dcm unreadable, sidecar fine
        ct = sample(stored, "CT_small.dcm")  # its series folder unreadable
        jpeg = sample(stored, "JPEG2000.dcm")  # its study folder unreadable
        assert len({green.series, ct.series, jpeg.series}) == 3
        assert len({ct.study, jpeg.study, green.study}) == 3
        server.stop()
        offset = server.log.stat().st_size

        green.sidecar(archive_dir).unlink()  # the folder changed: it is read again
        for path in (
            green.dcm(archive_dir),
            red.dcm(archive_dir),
            ct.dcm(archive_dir).parent,
            jpeg.dcm(archive_dir).parent.parent,
        ):
            path.chmod(0)
            locked.append(path)
        server.start()

        unserved = {green.sop, red.sop, ct.sop, jpeg.sop}
        assert listed_sops(server) == {i.sop for i in stored} - unserved
        for instance in stored:
            if instance.sop not in unserved:
                assert (
                    get(server, instance.url_path, AS_STORED).content == instance.file.read_bytes()
                )
        head, skipped = startup_summary(server, offset)
        assert "4 files or folders not served" in head, head
        assert set(skipped) == {str(path) for path in locked}
        assert "cannot be read" in skipped[str(red.dcm(archive_dir))]
        assert "Permission denied" in skipped[str(green.dcm(archive_dir))]
        assert "folder cannot be read" in skipped[str(ct.dcm(archive_dir).parent)]
        assert "folder cannot be read" in skipped[str(jpeg.dcm(archive_dir).parent.parent)]

        server.stop()  # readable again: everything is served, the green sidecar regenerated
        for path in locked:
            path.chmod(0o755 if path.is_dir() else 0o644)
        locked.clear()
        server.start()
        assert_serves(server, stored)
        assert green.sidecar(archive_dir).is_file()
    finally:
        for path in locked:
            path.chmod(0o755 if path.is_dir() else 0o644)
        server.stop()
