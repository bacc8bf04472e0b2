"""The change feed (Microsoft's DICOM service change feed, API version 2; not in PS3.18):
what every way in and DELETE record, in order, under dense sequence numbers, across restarts
and processes, read over HTTP and with the Python reader over the archive's files."""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
from datetime import datetime, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from localdicom.archive import ChangeFeed
from localdicom.archive.changefeed import END, EPOCH, Change, WindowGone, timestamp
from localdicom.importer import ImportOptions, run_import
from tests.helpers import SAMPLES, app_client, ct_slice, free_port, uid
from tests.helpers.dimse import AE_TITLE, dcmtk, start_dicom_server
from tests.helpers.http import stow
from tests.helpers.live import LiveServer, request, stow_file

SAMPLE_FILES = sorted(SAMPLES.glob("*.dcm"))


def instance_bytes(study: str, series: str, index: int, **options) -> bytes:
    buffer = io.BytesIO()
    ct_slice(study, series, index, size=16, **options).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def uids(path: Path) -> tuple[str, str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID


def shown(entries: list[dict]) -> list[tuple]:
    return [(e["Sequence"], e["Action"], e["SopInstanceUid"], e["State"]) for e in entries]


async def feed(client, query: str = "", prefix: str = "") -> list[dict]:
    response = await client.get(f"{prefix}/changefeed{query}")
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


# the feed on disk ---------------------------------------------------------------------------


def change(sop: str, action: str = "create") -> Change:
    return Change(action, "1.2.3", "1.2.3.4", sop, "1.2.840.10008.5.1.4.1.1.2")


def _append_many(folder: str, name: str, count: int) -> None:
    feed = ChangeFeed(Path(folder))
    for index in range(count):
        feed.append([change(f"1.9.{name}.{index}")], fsync=False)


def test_two_processes_appending_at_once_get_dense_unique_sequences(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=_append_many, args=(str(tmp_path), name, 150)) for name in "12"]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
        assert writer.exitcode == 0
    entries = ChangeFeed(tmp_path).after(0, 1000)
    assert [entry.sequence for entry in entries] == list(range(1, 301))
    assert len({entry.sop for entry in entries}) == 300
    for name in "12":  # each writer's changes in its own order
        mine = [entry.sop for entry in entries if entry.sop.startswith(f"1.9.{name}.")]
        assert mine == [f"1.9.{name}.{index}" for index in range(150)]
    stamps = [entry.timestamp for entry in entries]
    assert stamps == sorted(stamps)


def test_retention_drops_whole_segments_and_keeps_sequence_numbers(tmp_path: Path) -> None:
    feed = ChangeFeed(tmp_path, segment_entries=4, segments_kept=3)
    for index in range(20):
        feed.append([change(f"1.9.{index}")], fsync=False)
    assert len(feed.segments()) == 3
    kept = feed.after(0, 100)
    assert [entry.sequence for entry in kept] == list(range(9, 21))  # 12 = 3 segments of 4
    assert [entry.sop for entry in kept] == [f"1.9.{index}" for index in range(8, 20)]
    assert feed.after(14, 2)[0].sequence == 15  # an offset (a sequence) still means the same
    assert feed.latest().sequence == 20
    # a reader that kept count of an offset over the whole feed keeps its place
    assert feed.window(EPOCH, END, 10, 1)[0].sequence == 11


def test_a_window_starting_among_dropped_changes_is_gone(tmp_path: Path) -> None:
    feed = ChangeFeed(tmp_path, segment_entries=2, segments_kept=1)
    for index in range(5):
        feed.append([change(f"1.9.{index}")], fsync=False)
    dropped = feed.dropped()
    assert dropped.last == 4 and dropped.first_time < dropped.last_time
    with pytest.raises(WindowGone, match="dropped by retention"):
        feed.window(dropped.last_time, END, 0, 10)  # holds dropped changes, but not all
    after = timestamp(datetime.fromisoformat(dropped.last_time) + timedelta(microseconds=1))
    assert [entry.sequence for entry in feed.window(after, END, 0, 10)] == [5]
    assert [entry.sequence for entry in feed.window(EPOCH, END, 4, 10)] == [5]


def test_a_partial_last_line_is_skipped_then_cut_off(tmp_path: Path) -> None:
    feed = ChangeFeed(tmp_path)
    feed.append([change("1.9.1"), change("1.9.2")], fsync=False)
    (segment,) = feed.segments()
    with segment.open("ab") as fp:
        fp.write(b"3\t2026-01-01T00:00")  # a crash in the middle of an append
    reader = ChangeFeed(tmp_path)
    assert [entry.sop for entry in reader.after(0, 10)] == ["1.9.1", "1.9.2"]
    reader.append([change("1.9.3")], fsync=True)
    assert [entry.sequence for entry in ChangeFeed(tmp_path).after(0, 10)] == [1, 2, 3]


def test_states_follow_later_changes_of_the_same_instance(tmp_path: Path) -> None:
    """Microsoft's states: current, replaced (a later version), deleted."""
    feed = ChangeFeed(tmp_path, segment_entries=2)
    feed.append([change("1.9.1"), change("1.9.2"), change("1.9.3")], fsync=False)
    feed.append([change("1.9.1", "update"), change("1.9.2", "delete")], fsync=False)
    feed.append([change("1.9.4")], fsync=False)
    feed.append([change("1.9.4", "delete"), change("1.9.4")], fsync=False)
    states = [(entry.sop, entry.action, entry.state) for entry in feed.after(0, 100)]
    assert states == [
        ("1.9.1", "create", "replaced"),
        ("1.9.2", "create", "deleted"),
        ("1.9.3", "create", "current"),
        ("1.9.1", "update", "current"),
        ("1.9.2", "delete", "deleted"),
        ("1.9.4", "create", "replaced"),
        ("1.9.4", "delete", "replaced"),  # stored again since
        ("1.9.4", "create", "current"),
    ]
    # a page sees the changes after it
    assert [entry.state for entry in feed.after(0, 2)] == ["replaced", "deleted"]


# over HTTP, in process ----------------------------------------------------------------------


async def test_stow_delete_and_overwrite_each_appear_once_in_order(archive_dir: Path) -> None:
    async with app_client(archive_dir, overwrite=True) as client:
        for path in SAMPLE_FILES:
            assert (await stow(client, path.read_bytes())).status == 200
        assert (await stow(client, SAMPLE_FILES[0].read_bytes())).status == 200  # no change
        study, series, sop, sop_class = uids(SAMPLE_FILES[1])
        url = f"/studies/{study}/series/{series}/instances/{sop}"
        assert (await client.delete(url)).status == 204
        changed = instance_bytes("feed-study", "feed-series", 0)
        assert (await stow(client, changed)).status == 200
        replacement = instance_bytes("feed-study", "feed-series", 0, patient="OTHER^NAME")
        assert (await stow(client, replacement)).status == 200
        refused = await client.post(  # a request that stores nothing records nothing
            "/studies", data=b"not dicom", headers={"Content-Type": "application/dicom"}
        )
        assert refused.status == 409
        assert (await client.delete(url)).status == 404  # deleted already

        entries = await feed(client, "?includemetadata=false")

    created = [uids(path) for path in SAMPLE_FILES]
    new_sop = uid("feed-series/0")
    assert shown(entries) == [
        (1, "create", created[0][2], "current"),
        (2, "create", created[1][2], "deleted"),
        (3, "create", created[2][2], "current"),
        (4, "delete", sop, "deleted"),
        (5, "create", new_sop, "replaced"),
        (6, "update", new_sop, "current"),
    ]
    for entry, (study_uid, series_uid, sop_uid, class_uid) in zip(entries, created, strict=False):
        assert (entry["StudyInstanceUid"], entry["SeriesInstanceUid"]) == (study_uid, series_uid)
        assert (entry["SopInstanceUid"], entry["SopClassUid"]) == (sop_uid, class_uid)
    assert entries[3]["SopClassUid"] == sop_class  # a deletion names the class too
    assert all("Metadata" not in entry for entry in entries)
    assert entries[0]["Timestamp"].endswith("Z")


async def test_includemetadata_gives_the_instance_metadata(archive_dir: Path) -> None:
    async with app_client(archive_dir) as client:
        for path in SAMPLE_FILES:
            await stow(client, path.read_bytes())
        study, series, sop, _ = uids(SAMPLE_FILES[0])
        instance = f"/studies/{study}/series/{series}/instances/{sop}"
        await client.delete(instance)
        entries = await feed(client, "?includeMetadata=true", prefix="/v2")  # the default
        assert await feed(client, prefix="/v2") == entries
        study, series, sop, _ = uids(SAMPLE_FILES[1])
        response = await client.get(f"/v2/studies/{study}/series/{series}/instances/{sop}/metadata")
        (metadata,) = await response.json()

    assert entries[0]["State"] == "deleted" and entries[0]["Metadata"] is None
    assert entries[1]["Metadata"] == metadata  # BulkDataURIs under the same root
    original = pydicom.dcmread(SAMPLE_FILES[2], stop_before_pixels=True)
    assert entries[2]["Metadata"]["00100010"]["Value"] == [
        {"Alphabetic": str(original.PatientName)}
    ]


async def test_latest_and_paging(archive_dir: Path) -> None:
    async with app_client(archive_dir) as client:
        empty = await client.get("/changefeed/latest")
        assert empty.status == 204
        assert await feed(client) == []
        bodies = [instance_bytes("paging", "paging-series", index) for index in range(7)]
        for body in bodies:
            await stow(client, body)
        latest = await (await client.get("/changefeed/latest?includemetadata=false")).json()
        pages = [await feed(client, f"?offset={offset}&limit=3") for offset in (0, 3, 6, 9)]
        v1 = await feed(client, "?offset=2&limit=2", prefix="/v1")
        v1_default = await feed(client, prefix="/v1")
        everything = await feed(client, "?limit=200")
        start, end = everything[2]["Timestamp"], everything[5]["Timestamp"]
        window = await feed(client, f"?startTime={start}&endTime={end}&offset=1&limit=200")

    assert latest["Sequence"] == 7 and latest["SopInstanceUid"] == uid("paging-series/6")
    assert "Metadata" not in latest
    assert [[entry["Sequence"] for entry in page] for page in pages] == [
        [1, 2, 3],
        [4, 5, 6],
        [7],
        [],
    ]
    assert [entry["Sequence"] for entry in v1] == [3, 4]  # v1: offset is a sequence number
    assert len(v1_default) == 7  # v1's default limit is 10
    # the window from the 3rd change's time (inclusive) to the 6th's (exclusive), less one
    in_window = [e["Sequence"] for e in everything if start <= e["Timestamp"] < end]
    assert [entry["Sequence"] for entry in window] == in_window[1:]


@pytest.mark.parametrize(
    "query",
    [
        "/changefeed?limit=0",
        "/changefeed?limit=201",
        "/v1/changefeed?limit=101",
        "/changefeed?limit=ten",
        "/changefeed?offset=-1",
        "/changefeed?includemetadata=yes",
        "/changefeed/latest?includemetadata=1",
        "/changefeed?startTime=yesterday",
        "/changefeed?startTime=2024-05-10T17:00:00Z&endTime=2024-05-10T16:00:00Z",
        "/v1/changefeed?startTime=2024-05-10T16:00:00Z",
    ],
)
async def test_bad_parameters_are_400_with_a_reason(client, query: str) -> None:
    response = await client.get(query)
    assert response.status == 400
    text = await response.text()
    assert len(text.strip().splitlines()) == 1 and text.strip()


async def test_concurrent_stow_gets_dense_sequences(archive_dir: Path) -> None:
    bodies = [instance_bytes("concurrent", f"series-{index % 3}", index) for index in range(24)]
    async with app_client(archive_dir) as client:
        answers = await asyncio.gather(*(stow(client, body) for body in bodies))
        assert all(answer.status == 200 for answer in answers)
        entries = await feed(client, "?includemetadata=false&limit=200")
    assert [entry["Sequence"] for entry in entries] == list(range(1, 25))
    expected = {uid(f"series-{index % 3}/{index}") for index in range(24)}
    assert {entry["SopInstanceUid"] for entry in entries} == expected
    assert {entry["Action"] for entry in entries} == {"create"}


# every way in -------------------------------------------------------------------------------


def test_direct_import_is_recorded_and_read_by_the_python_reader(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for index in range(3):
        (source / f"IM{index}").write_bytes(instance_bytes("import", "import-series", index))
    archive = tmp_path / "archive"
    report = run_import([source], archive, ImportOptions(workers=1))
    assert report.stored == 3
    run_import([source], archive, ImportOptions(workers=1))  # already present: nothing new
    entries = ChangeFeed.of(archive).after(0, 100)
    assert [entry.sequence for entry in entries] == [1, 2, 3]
    assert {entry.sop for entry in entries} == {uid(f"import-series/{i}") for i in range(3)}
    class_uid = pydicom.dcmread(source / "IM0").SOPClassUID
    assert {(entry.action, entry.state, entry.sop_class) for entry in entries} == {
        ("create", "current", class_uid)
    }
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "IM1").write_bytes(instance_bytes("import", "import-series", 1, patient="NEW^P"))
    assert run_import([changed], archive, ImportOptions(workers=1)).stored == 0  # a conflict
    report = run_import([changed], archive, ImportOptions(overwrite=True, workers=1))
    assert report.stored == 1
    entries = ChangeFeed.of(archive).after(0, 100)
    states = [e.state for e in entries if e.sop == uid("import-series/1")]
    assert (entries[-1].sequence, entries[-1].action, entries[-1].sop) == (
        4,
        "update",
        uid("import-series/1"),
    )
    assert states == ["replaced", "current"]


def test_store_delete_overwrite_and_import_in_order_across_a_restart(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    server = LiveServer(archive, free_port(), extra_args=("--overwrite",))
    server.start()
    try:
        first = get_testdata_file("CT_small.dcm")
        assert stow_file(server.url, Path(first)).status == 200
        server.restart()
        source = tmp_path / "source"
        source.mkdir()
        (source / "IM0").write_bytes(instance_bytes("live", "live-series", 0))
        report = run_import([source], archive, ImportOptions(workers=1))  # through the server
        assert report.stored == 1 and report.server == server.url
        study, _, sop, _ = uids(Path(first))
        deleted = request(f"{server.url}/studies/{study}", method="DELETE")
        assert deleted.status == 204
        server.restart()
        replacement = tmp_path / "replacement"
        replacement.write_bytes(instance_bytes("live", "live-series", 0, patient="NEW^NAME"))
        assert stow_file(server.url, replacement).status == 200
        reply = request(f"{server.url}/v2/changefeed?includemetadata=false")
    finally:
        server.stop()
    assert reply.status == 200, reply.text
    assert shown(json.loads(reply.body)) == [
        (1, "create", sop, "deleted"),
        (2, "create", uid("live-series/0"), "replaced"),
        (3, "delete", sop, "deleted"),
        (4, "update", uid("live-series/0"), "current"),
    ]


@pytest.mark.external
def test_dimse_c_store_is_recorded(tmp_path: Path) -> None:
    server = start_dicom_server(tmp_path)
    try:
        path = Path(get_testdata_file("CT_small.dcm"))
        sent = dcmtk("storescu", "-aec", AE_TITLE, "127.0.0.1", str(server.dicom_port), str(path))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        reply = request(f"{server.url}/changefeed/latest?includemetadata=false")
    finally:
        server.stop()
    assert reply.status == 200, reply.text
    entry = json.loads(reply.body)
    study, series, sop, sop_class = uids(path)
    assert (entry["Sequence"], entry["Action"], entry["State"]) == (1, "create", "current")
    assert (entry["StudyInstanceUid"], entry["SeriesInstanceUid"]) == (study, series)
    assert (entry["SopInstanceUid"], entry["SopClassUid"]) == (sop, sop_class)
