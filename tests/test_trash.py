"""The trash (localdicom/archive/trash.py): DELETE, the reject route and --overwrite move what
they remove to ARCHIVE/.trash/, and ``localdicom trash restore`` brings it back byte for byte.

Each test compares what comes back with the original files (the repository's samples, real
DICOM files), never with what the server answered before."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from localdicom.archive import Archive, ChangeFeed, Why
from localdicom.archive import trash as trash_module
from localdicom.cli import main
from localdicom.dicom.rejection import REJECTION_REASONS, UnknownRejection, rejection_code
from localdicom.importer import ImportOptions, run_import
from localdicom.settings import Duration
from localdicom.trashbin import Selection, restore
from tests.helpers import (
    SAMPLES,
    SERIES_CIRCLE,
    SERIES_SQUARE_TRIANGLE,
    SOP_BLUE_CIRCLE,
    SOP_GREEN_SQUARE,
    SOP_RED_TRIANGLE,
    STUDY_UID,
    app_client,
)
from tests.helpers.stocked import SAMPLE_FILES, derived, multipart, request, sample, stow

SERIES_OF = {
    SOP_BLUE_CIRCLE: SERIES_CIRCLE,
    SOP_GREEN_SQUARE: SERIES_SQUARE_TRIANGLE,
    SOP_RED_TRIANGLE: SERIES_SQUARE_TRIANGLE,
}
ORIGINALS = {
    SOP_BLUE_CIRCLE: sample("blue-circle.dcm"),
    SOP_GREEN_SQUARE: sample("green-square.dcm"),
    SOP_RED_TRIANGLE: sample("red-triangle.dcm"),
}
#: The route of each level, and the instances a DELETE there removes.
LEVELS = {
    "study": (f"/studies/{STUDY_UID}", set(ORIGINALS)),
    "series": (
        f"/studies/{STUDY_UID}/series/{SERIES_SQUARE_TRIANGLE}",
        {SOP_GREEN_SQUARE, SOP_RED_TRIANGLE},
    ),
    "instance": (
        f"/studies/{STUDY_UID}/series/{SERIES_CIRCLE}/instances/{SOP_BLUE_CIRCLE}",
        {SOP_BLUE_CIRCLE},
    ),
}


def stored_file(archive: Path, sop: str) -> Path:
    return archive / STUDY_UID / SERIES_OF[sop] / f"{sop}.dcm"


async def listed(client) -> set[str]:
    answer = await request(client, "GET", "/instances")
    assert answer.status == 200
    return {item["00080018"]["Value"][0] for item in answer.json()}


async def stock(client) -> None:
    answer = await stow(client, multipart(*(sample(name) for name in SAMPLE_FILES)))
    assert answer.status == 200, answer.text


def manifests(archive: Path) -> list[dict]:
    found = sorted(archive.glob(".trash/*/manifest.json"))
    return [json.loads(path.read_bytes()) for path in found]


@pytest.mark.parametrize("level", LEVELS)
async def test_delete_then_restore_is_byte_identical(archive_dir: Path, level: str) -> None:
    path, removed = LEVELS[level]
    async with app_client(archive_dir) as client:
        await stock(client)
        assert (await request(client, "DELETE", path)).status == 204
        assert await listed(client) == set(ORIGINALS) - removed  # gone from queries at once
    for sop in removed:
        assert not stored_file(archive_dir, sop).exists()
    (manifest,) = manifests(archive_dir)
    assert manifest["reason"] == "delete" and path in manifest["by"]
    assert {item["sop"] for item in manifest["instances"]} == removed
    async with app_client(archive_dir) as client:  # a restart does not index the trash
        assert await listed(client) == set(ORIGINALS) - removed
    report = restore(archive_dir, Selection(), fsync=False)
    assert {each.sop for each in report.restored} == removed
    assert report.exit_code == 0
    assert not list((archive_dir / ".trash").iterdir())
    # the change feed: the deletes, then the restored instances created again
    changes = ChangeFeed.of(archive_dir).after(len(ORIGINALS), 100)
    assert [each.action for each in changes] == ["delete"] * len(removed) + ["create"] * len(
        removed
    )
    assert {each.sop for each in changes} == removed
    async with app_client(archive_dir) as client:
        assert await listed(client) == set(ORIGINALS)
        for sop, original in ORIGINALS.items():
            assert stored_file(archive_dir, sop).read_bytes() == original
            url = f"/studies/{STUDY_UID}/series/{SERIES_OF[sop]}/instances/{sop}"
            answer = await request(client, "GET", url, headers={"Accept": "application/dicom"})
            assert answer.status == 200


async def test_overwrite_keeps_the_old_version_and_restore_brings_it_back(
    archive_dir: Path,
) -> None:
    newer = derived("blue-circle.dcm", SeriesDescription="second version")
    async with app_client(archive_dir, overwrite=True) as client:
        await stock(client)
        assert (await stow(client, multipart(newer))).status == 200
    (entry,) = (archive_dir / ".trash").iterdir()
    assert manifests(archive_dir)[0]["reason"] == "overwrite"
    # The newer one is stored: restoring the old one is a conflict that replaces nothing.
    report = restore(archive_dir, Selection(entry=entry.name), fsync=False)
    assert [each.sop for each, _ in report.conflicts] == [SOP_BLUE_CIRCLE]
    assert report.exit_code == 1
    assert stored_file(archive_dir, SOP_BLUE_CIRCLE).read_bytes() == newer
    # Deleted (to the trash as well), the newer one makes way for the old one.
    async with app_client(archive_dir) as client:
        path = LEVELS["instance"][0]
        assert (await request(client, "DELETE", path)).status == 204
    report = restore(archive_dir, Selection(entry=entry.name), fsync=False)
    assert [each.sop for each in report.restored] == [SOP_BLUE_CIRCLE]
    assert stored_file(archive_dir, SOP_BLUE_CIRCLE).read_bytes() == ORIGINALS[SOP_BLUE_CIRCLE]
    (left,) = Archive(archive_dir).trash.entries()  # the newer one, still restorable
    assert left.instances[0].path.read_bytes() == newer


async def test_overwrite_in_an_import_keeps_the_old_version(archive_dir: Path, tmp_path) -> None:
    newer = tmp_path / "newer.dcm"
    newer.write_bytes(derived("blue-circle.dcm", SeriesDescription="second version"))
    run_import([SAMPLES / "blue-circle.dcm"], archive_dir)
    report = run_import([newer], archive_dir, ImportOptions(overwrite=True))
    assert report.exit_code == 0
    (entry,) = Archive(archive_dir).trash.entries()
    assert entry.manifest["reason"] == "overwrite"
    assert entry.instances[0].path.read_bytes() == ORIGINALS[SOP_BLUE_CIRCLE]


async def test_no_trash_deletes_for_good(archive_dir: Path) -> None:
    async with app_client(archive_dir, trash=False) as client:
        await stock(client)
        assert (await request(client, "DELETE", f"/studies/{STUDY_UID}")).status == 204
    assert not any((archive_dir / ".trash").glob("*"))
    assert not (archive_dir / STUDY_UID).exists()


# the reject route (dcm4chee's, which OHIF calls with supportsReject) -------------------------


@pytest.mark.parametrize("code", [f"{value}^{scheme}" for value, scheme in REJECTION_REASONS])
async def test_reject_moves_to_the_trash_with_its_code(archive_dir: Path, code: str) -> None:
    async with app_client(archive_dir) as client:
        await stock(client)
        series = f"/dicom-web/studies/{STUDY_UID}/series/{SERIES_SQUARE_TRIANGLE}"
        # OHIF sends the caret percent-encoded: .../reject/113001%5EDCM
        answer = await request(client, "POST", f"{series}/reject/{code.replace('^', '%5E')}")
        assert answer.status == 200, answer.text
        assert answer.json()["rejected"] == 2
        assert await listed(client) == {SOP_BLUE_CIRCLE}
    (manifest,) = manifests(archive_dir)
    value, scheme = code.split("^")
    assert manifest["reason"] == "reject"
    assert manifest["code"] == {
        "value": value,
        "designator": scheme,
        "meaning": REJECTION_REASONS[(value, scheme)],
    }


async def test_reject_at_each_level_and_its_errors(archive_dir: Path) -> None:
    async with app_client(archive_dir) as client:
        await stock(client)
        instance = LEVELS["instance"][0]
        for bad in ("999999^DCM", "113001^SRT", "113001", "^"):
            answer = await request(client, "POST", f"{instance}/reject/{bad}")
            assert answer.status == 400, bad
            assert "CID 7011" in answer.text
        assert await listed(client) == set(ORIGINALS)
        assert (await request(client, "POST", f"{instance}/reject/113039^DCM")).status == 200
        assert (await request(client, "POST", f"{instance}/reject/113039^DCM")).status == 404
        study = f"/studies/{STUDY_UID}"
        assert (await request(client, "POST", f"{study}/reject/113037^DCM")).status == 200
        assert await listed(client) == set()
        assert (await request(client, "POST", f"{study}/reject/113037^DCM")).status == 404
    assert [m["code"]["value"] for m in manifests(archive_dir)] == ["113039", "113037"]
    report = restore(archive_dir, Selection(study=STUDY_UID), fsync=False)
    assert {each.sop for each in report.restored} == set(ORIGINALS)
    for sop, original in ORIGINALS.items():
        assert stored_file(archive_dir, sop).read_bytes() == original


# crash safety, purging and the commands --------------------------------------------------------


async def test_a_removal_cut_short_is_put_back_at_start(archive_dir: Path) -> None:
    """A pending entry is what a crash leaves between the first rename and the sealing one:
    the removal was never acknowledged, so the next start puts its instances back."""
    async with app_client(archive_dir) as client:
        await stock(client)
    trash = Archive(archive_dir, fsync=False).trash
    entry = trash.move_folder(STUDY_UID, SERIES_SQUARE_TRIANGLE, Why("delete"))
    (trash.root / entry).rename(trash.root / f"{entry}.pending")  # as if killed before sealing
    async with app_client(archive_dir) as client:
        assert await listed(client) == set(ORIGINALS)
    assert not any(trash.root.iterdir())
    for sop, original in ORIGINALS.items():
        assert stored_file(archive_dir, sop).read_bytes() == original


async def test_a_replacement_cut_short_keeps_the_old_version_only_if_the_new_one_landed(
    archive_dir: Path,
) -> None:
    async with app_client(archive_dir) as client:
        await stock(client)
    trash = Archive(archive_dir, fsync=False).trash
    # killed before the new copy was renamed in: the link is dropped, the old one stays stored
    trash.keep(STUDY_UID, SERIES_CIRCLE, SOP_BLUE_CIRCLE, Why("overwrite"))
    assert trash.recover() == 0 and not any(trash.root.iterdir())
    # killed after: the old version is the one in the trash
    trash.keep(STUDY_UID, SERIES_CIRCLE, SOP_BLUE_CIRCLE, Why("overwrite"))
    newer = derived("blue-circle.dcm", SeriesDescription="second version")
    stored = stored_file(archive_dir, SOP_BLUE_CIRCLE)
    stored.with_name("new.part").write_bytes(newer)
    os.replace(stored.with_name("new.part"), stored)
    trash.recover()
    (entry,) = trash.entries()
    assert entry.instances[0].path.read_bytes() == ORIGINALS[SOP_BLUE_CIRCLE]


def age(archive: Path, days: float) -> None:
    """Make every trash entry look removed ``days`` ago."""
    for path in archive.glob(".trash/*/manifest.json"):
        manifest = json.loads(path.read_bytes())
        manifest["time"] = time.time() - days * 86400
        path.write_text(json.dumps(manifest))


async def test_trash_empty_older_than(archive_dir: Path) -> None:
    async with app_client(archive_dir) as client:
        await stock(client)
        assert (await request(client, "DELETE", LEVELS["instance"][0])).status == 204
        age(archive_dir, 40)
        assert (await request(client, "DELETE", LEVELS["series"][0])).status == 204
    runner = CliRunner()
    result = runner.invoke(main, ["trash", "ls", str(archive_dir)], standalone_mode=False)
    assert result.exception is None, result.output
    assert "40 d" in result.output and "0 min" in result.output
    result = runner.invoke(
        main, ["trash", "empty", str(archive_dir), "--older-than", "30d"], standalone_mode=False
    )
    assert "1 trash entries deleted: 1 instances" in result.output
    (kept,) = Archive(archive_dir).trash.entries()
    assert {each.sop for each in kept.instances} == {SOP_GREEN_SQUARE, SOP_RED_TRIANGLE}
    result = runner.invoke(main, ["ls", str(archive_dir)], standalone_mode=False)
    assert "2 instances in the trash" in result.output
    runner.invoke(main, ["trash", "empty", str(archive_dir)], standalone_mode=False)
    assert not any((archive_dir / ".trash").iterdir())


async def test_the_server_purges_entries_older_than_trash_days(archive_dir: Path) -> None:
    async with app_client(archive_dir) as client:
        await stock(client)
        assert (await request(client, "DELETE", LEVELS["instance"][0])).status == 204
    age(archive_dir, 8)
    async with app_client(archive_dir, trash_days=10) as client:
        assert len(manifests(archive_dir)) == 1
    async with app_client(archive_dir, trash_days=7):
        pass
    assert manifests(archive_dir) == []


def test_restore_needs_one_selection(archive_dir: Path) -> None:
    archive_dir.mkdir()
    for arguments in ([], ["--all", "--study", STUDY_UID]):
        result = CliRunner().invoke(main, ["trash", "restore", str(archive_dir), *arguments])
        assert result.exit_code == 2
        assert "give one of --all, --study, --series, --instance or --entry" in result.output


# a full disk ----------------------------------------------------------------------------------


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


async def test_a_delete_on_a_full_disk_removes_nothing(archive_dir: Path, monkeypatch) -> None:
    async with app_client(archive_dir) as client:
        await stock(client)
        monkeypatch.setattr(trash_module, "write_new", no_space)  # the manifest
        answer = await request(client, "DELETE", f"/studies/{STUDY_UID}")
        assert answer.status == 507
        assert answer.text.splitlines() == [
            "nothing was removed: the archive cannot be written (No space left on device)"
        ]
        assert await listed(client) == set(ORIGINALS)
    assert not any((archive_dir / ".trash").iterdir())
    for sop, original in ORIGINALS.items():
        assert stored_file(archive_dir, sop).read_bytes() == original


async def test_a_move_that_fails_half_way_puts_back_what_it_moved(
    archive_dir: Path, monkeypatch
) -> None:
    """The .dcm is in the entry, its sidecar cannot follow: the .dcm goes back."""
    rename = os.rename

    def fail_on_sidecars(source, target) -> None:
        if str(source).endswith(".json") and ".pending" in str(target):
            raise OSError(errno.EIO, "Input/output error")
        rename(source, target)

    async with app_client(archive_dir) as client:
        await stock(client)
        monkeypatch.setattr(trash_module.os, "rename", fail_on_sidecars)
        answer = await request(client, "DELETE", LEVELS["instance"][0])
        monkeypatch.undo()
        assert answer.status == 507
        assert await listed(client) == set(ORIGINALS)
    assert not any((archive_dir / ".trash").iterdir())
    assert stored_file(archive_dir, SOP_BLUE_CIRCLE).read_bytes() == ORIGINALS[SOP_BLUE_CIRCLE]
    assert stored_file(archive_dir, SOP_BLUE_CIRCLE).with_suffix(".json").is_file()


async def test_import_overwrite_no_trash_replaces_for_good(archive_dir: Path, tmp_path) -> None:
    newer = tmp_path / "newer.dcm"
    newer.write_bytes(derived("blue-circle.dcm", SeriesDescription="second version"))
    run_import([SAMPLES / "blue-circle.dcm"], archive_dir)
    run_import([newer], archive_dir, ImportOptions(overwrite=True, keep_replaced=False))
    assert list(Archive(archive_dir).trash.entries()) == []
    assert stored_file(archive_dir, SOP_BLUE_CIRCLE).read_bytes() == newer.read_bytes()


# the codes and ages the commands and routes take --------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("2", 172800)]
)
def test_ages(text: str, seconds: float) -> None:
    assert Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["", "d", "soon", "-1d"])
def test_what_is_not_an_age(text: str) -> None:
    with pytest.raises(click.BadParameter):
        Duration().convert(text, None, None)


def test_rejection_codes_are_those_of_cid_7011() -> None:
    """PS3.16 CID 7011: what a rejection Key Object Selection's title may be."""
    assert rejection_code(" 113001 ^ DCM") == {
        "value": "113001",
        "designator": "DCM",
        "meaning": "Rejected for Quality Reasons",
    }
    for text in ("113001^99DCM4CHEE", "REVOKE_REJECTION^99DCM4CHEE", "113001^", "113001"):
        with pytest.raises(UnknownRejection):
            rejection_code(text)


async def test_deleting_what_was_removed_by_hand_leaves_no_empty_entry(archive_dir: Path) -> None:
    async with app_client(archive_dir) as client:
        await stock(client)
        series = archive_dir / STUDY_UID / SERIES_SQUARE_TRIANGLE
        for path in series.iterdir():
            path.unlink()
        series.rmdir()
        stored_file(archive_dir, SOP_BLUE_CIRCLE).unlink()
        assert (await request(client, "DELETE", LEVELS["series"][0])).status == 204
        assert (await request(client, "DELETE", LEVELS["instance"][0])).status == 204
        assert await listed(client) == set()
    assert not any((archive_dir / ".trash").iterdir())


async def test_an_overwrite_that_cannot_keep_the_old_copy_replaces_nothing(
    archive_dir: Path, monkeypatch
) -> None:
    """No room for the trash entry: the store fails as out of resources (A700, PS3.4 B.2.3),
    and the stored instance stays as it was."""
    newer = derived("blue-circle.dcm", SeriesDescription="second version")
    async with app_client(archive_dir, overwrite=True) as client:
        await stock(client)
        monkeypatch.setattr(trash_module, "write_new", no_space)
        answer = await stow(client, multipart(newer))
        monkeypatch.undo()
        assert answer.status == 507
        assert answer.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA700]
        assert await listed(client) == set(ORIGINALS)
    assert not any((archive_dir / ".trash").iterdir())
    assert stored_file(archive_dir, SOP_BLUE_CIRCLE).read_bytes() == ORIGINALS[SOP_BLUE_CIRCLE]
