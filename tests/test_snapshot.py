"""The index snapshot: a start from it builds the index that reading every sidecar builds,
and a damaged snapshot costs only the time to read the folders it no longer describes."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from localdicom.archive import Archive, Layout, sidecar
from localdicom.archive import snapshot as snapshot_file
from localdicom.archive.layout import SNAPSHOT
from localdicom.catalog import Catalog, OpenReport
from localdicom.importer import run_import
from localdicom.index import SCHEMA, Index
from tests.helpers import SAMPLES, prepare_here
from tests.helpers.corpus import pydicom_file

SAMPLE_FILES = sorted(SAMPLES.glob("*.dcm"))  # one study, two series


async def opened(root: Path) -> tuple[Catalog, OpenReport]:
    catalog = Catalog(Archive(root, fsync=False), prepare=prepare_here)
    return catalog, await catalog.open()


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def contents(index: Index) -> dict[str, tuple]:
    """Everything the index holds of each instance, its series and its study."""
    return {
        sop: (
            record.study,
            record.series,
            record.transfer_syntax,
            record.size,
            record.digest,
            record.values,
            record.frame_count,
            index.series[record.series].values,
            index.studies[record.study].values,
        )
        for sop, record in index.instances.items()
    }


@pytest.fixture
async def stored(tmp_path: Path) -> tuple[Path, dict[str, tuple]]:
    """An archive of the samples with its snapshot, and the index read from its sidecars."""
    root = tmp_path / "archive"
    catalog, _ = await opened(root)
    for path in SAMPLE_FILES:
        await catalog.store(one_chunk(path.read_bytes()))
    catalog.save_snapshot()
    snapshot = (root / SNAPSHOT).read_bytes()
    (root / SNAPSHOT).unlink()
    from_sidecars, report = await opened(root)
    assert report.scan.from_snapshot == 0
    assert len(from_sidecars.index.instances) == len(SAMPLE_FILES)
    (root / SNAPSHOT).write_bytes(snapshot)
    return root, contents(from_sidecars.index)


async def test_a_start_from_the_snapshot_builds_the_index_the_sidecars_build(stored) -> None:
    root, from_sidecars = stored
    catalog, report = await opened(root)
    assert report.scan.from_snapshot == len(SAMPLE_FILES)
    assert contents(catalog.index) == from_sidecars


async def test_a_damaged_entry_costs_only_a_read_of_its_folder(stored) -> None:
    root, from_sidecars = stored
    header, first, *others = (root / SNAPSHOT).read_bytes().split(b"\n")
    key, _, text = first.partition(b"\t")
    (root / SNAPSHOT).write_bytes(b"\n".join([header, key + b"\t" + text[:-7], *others]))
    catalog, report = await opened(root)
    damaged_series = len(orjson.loads(text)["instances"])
    assert report.scan.from_snapshot == len(SAMPLE_FILES) - damaged_series
    assert contents(catalog.index) == from_sidecars
    _, report = await opened(root)  # the damaged snapshot was written anew
    assert report.scan.from_snapshot == len(SAMPLE_FILES)


async def test_a_snapshot_line_without_its_key_is_ignored_whole(stored) -> None:
    root, from_sidecars = stored
    with (root / SNAPSHOT).open("ab") as fp:
        fp.write(b"no key on this line\n")
    catalog, report = await opened(root)
    assert report.scan.from_snapshot == 0
    assert contents(catalog.index) == from_sidecars


def layout_1(index: Index, entry: dict) -> dict:
    """A series' entry as entry layout 1 held it: each instance with all its values."""
    records = [index.instances[data[0]] for data in entry.pop("instances")]
    del entry["shared"]
    entry["instances"] = [
        [r.sop, r.transfer_syntax, r.size, r.digest.hex(), list(r.values), r.frame_count]
        for r in records
    ]
    return entry


async def test_a_snapshot_of_entry_layout_1_is_restored_then_written_anew(stored) -> None:
    root, from_sidecars = stored
    catalog, _ = await opened(root)
    header, *lines = (root / SNAPSHOT).read_bytes().rstrip(b"\n").split(b"\n")
    assert header == f"{sidecar.FORMAT}/{SCHEMA}".encode()
    older = [f"{sidecar.FORMAT}/{SCHEMA.rpartition('.')[0]}".encode()]
    for line in lines:
        key, _, text = line.partition(b"\t")
        older.append(key + b"\t" + orjson.dumps(layout_1(catalog.index, orjson.loads(text))))
    (root / SNAPSHOT).write_bytes(b"\n".join(older) + b"\n")
    upgraded, report = await opened(root)
    assert report.scan.from_snapshot == len(SAMPLE_FILES)
    assert contents(upgraded.index) == from_sidecars
    assert (root / SNAPSHOT).read_bytes().startswith(header + b"\n")
    _, report = await opened(root)
    assert report.scan.from_snapshot == len(SAMPLE_FILES)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
async def test_the_snapshot_is_unmapped_once_read(stored) -> None:
    root, _ = stored
    catalog, _ = await opened(root)
    assert catalog.index.instances
    assert SNAPSHOT not in Path("/proc/self/maps").read_text()
    assert snapshot_file.read(Layout(root), (SCHEMA,))[1], "the snapshot was there to be mapped"


async def test_a_direct_import_leaves_the_snapshot_the_sidecars_build(stored) -> None:
    """The first start after an import reads no sidecar, into an archive already served
    (its snapshot current) and into a new one; the result is what the sidecars say."""
    root, _ = stored
    more = [pydicom_file("CT_small.dcm"), pydicom_file("MR_small.dcm")]
    for archive, sources in ((root, more), (root.parent / "new", [*SAMPLE_FILES, *more])):
        assert run_import(sources, archive).exit_code == 0
        catalog, report = await opened(archive)
        assert report.scan.from_snapshot == len(SAMPLE_FILES) + len(more)
        (archive / SNAPSHOT).unlink()
        from_sidecars, _ = await opened(archive)
        assert contents(catalog.index) == contents(from_sidecars.index)
