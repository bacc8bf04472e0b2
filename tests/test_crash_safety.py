"""SIGKILL the server in the middle of a stream of STOW-RS requests, restart it, and check
that it lost nothing it acknowledged and shows nothing half stored.

Four client threads send new small CT instances (one per request as ``application/dicom``,
or three per ``multipart/related`` request) until the server dies. After each restart:

* every instance answered 200 is listed by QIDO and its .dcm is byte for byte what was sent
  (the instances of the last round are also fetched over WADO-RS);
* every instance listed or on disk is one that was sent, whole, with its sidecar: nothing
  half written is visible, and the index and the folder agree;
* no temporary file is left anywhere in the archive (``.incoming/*.part``, ``.*.tmp``).

A second test kills the server while clients DELETE and reject at random levels: after each
restart every instance is whole either in the archive or in the trash (never both, never
lost, no removal left half done), and ``localdicom trash restore --all`` brings all back.
That server runs with ``--fsync``: the flushes before each entry's sealing rename widen the
window in which a kill leaves a removal half done (a few per run, put back at the restart).
A third sends new versions of the same instances to a server with ``--overwrite``: every
version it acknowledged is afterwards stored or in the trash.

Every fifth round the server is also killed while it starts up (while it rescans the series
changed by the previous round and writes its index snapshot).

The server runs with ``--no-fsync`` (the ``live_server`` fixture): SIGKILL leaves the kernel's
page cache intact, so this tests atomicity (uploads renamed into place whole, sidecars written
to a temporary file and renamed) and the startup repair, not durability against a power cut.
That is what ``--fsync``, the default, adds: the file, its sidecar and their folders are
flushed before the client gets its answer.
"""

from __future__ import annotations

import functools
import io
import itertools
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
import requests

from tests.helpers import ct_slice
from tests.helpers.http import multipart
from tests.helpers.live import LiveServer

pytestmark = pytest.mark.slow

KILLS = 20
CLIENTS = 4
AS_STORED = "application/dicom; transfer-syntax=*"


def instance_bytes(study: str, series: str, index: int) -> tuple[str, bytes]:
    ds = ct_slice(study, series, index, size=64)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return str(ds.SOPInstanceUID), buffer.getvalue()


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged, across all rounds."""

    sent: dict[str, bytes] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)
    acknowledged_this_round: set[str] = field(default_factory=set)
    unexpected: list[str] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    numbers: itertools.count = field(default_factory=itertools.count)


def send_until_the_server_dies(url: str, ledger: Ledger, client: int, seed: int) -> None:
    rng = random.Random(seed)
    with requests.Session() as session:
        while True:
            count = rng.choice([1, 1, 3])
            batch = []
            for _ in range(count):
                number = next(ledger.numbers)
                series = f"crash-{client}-{number // 40}"
                batch.append(instance_bytes(f"crash-study-{client}", series, number))
            with ledger.lock:
                ledger.sent.update(batch)
            if count == 1:
                body, content_type = batch[0][1], "application/dicom"
            else:
                body, content_type = multipart([data for _, data in batch])
            try:
                response = session.post(
                    f"{url}/studies",
                    data=body,
                    headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
                    timeout=30,
                )
            except requests.ConnectionError:
                return  # the server was killed: this request may or may not have been stored
            with ledger.lock:
                ledger.requests += 1
                if response.status_code == 200:
                    ledger.acknowledged.update(sop for sop, _ in batch)
                    ledger.acknowledged_this_round.update(sop for sop, _ in batch)
                else:
                    ledger.unexpected.append(f"{response.status_code} {response.text[:200]}")


def kill(server: LiveServer) -> None:
    assert server.process is not None
    server.process.kill()
    server.process.wait(timeout=10)
    server.process = None


def kill_during(
    server: LiveServer, work: Callable[[int, float], None], rng: random.Random, window: tuple
) -> None:
    """Run ``work(client, seed)`` in CLIENTS threads against ``server``, SIGKILL it at a
    random moment of ``window`` (seconds), and wait for the clients to see it die."""
    clients = [
        threading.Thread(target=work, args=(client, rng.random())) for client in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    time.sleep(rng.uniform(*window))
    kill(server)
    for client in clients:
        client.join(timeout=60)


def kill_while_starting(server: LiveServer, rng: random.Random) -> None:
    """Start the server in a thread and SIGKILL it a random moment into its startup."""
    failed = []

    def start() -> None:
        try:
            server.start()
        except RuntimeError as exc:  # "server exited": killed before it answered
            failed.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    while server.process is None:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.8))
    server.process.kill()
    starter.join(timeout=60)
    assert not starter.is_alive()
    server.process.wait(timeout=10)
    server.process = None


def temporary_files(archive: Path) -> list[Path]:
    incoming = list((archive / ".incoming").iterdir()) if (archive / ".incoming").is_dir() else []
    return incoming + [p for p in archive.rglob("*") if p.suffix in (".tmp", ".part")]


def listed(server: LiveServer) -> set[str]:
    response = requests.get(f"{server.url}/instances", timeout=60)
    assert response.status_code == 200
    return {item["00080018"]["Value"][0] for item in response.json()}


def check_archive(server: LiveServer, ledger: Ledger, fetch: set[str]) -> set[str]:
    """The checks after a restart (see the module docstring); returns the listed UIDs."""
    archive = server.archive
    assert temporary_files(archive) == [], "a temporary file survived the restart"
    sops = listed(server)
    missing = ledger.acknowledged - sops
    assert not missing, f"{len(missing)} acknowledged instances are not listed"
    assert sops <= set(ledger.sent), "an instance nobody sent is listed"
    on_disk = {path.stem: path for path in archive.glob("*/*/*.dcm")}
    assert set(on_disk) == sops, "the index and the folder disagree"
    for sop, path in on_disk.items():
        assert path.read_bytes() == ledger.sent[sop], f"{sop} is not what was sent"
        assert path.with_suffix(".json").is_file(), f"{sop} has no sidecar"
    for sop in fetch:
        found = requests.get(f"{server.url}/instances?SOPInstanceUID={sop}", timeout=30).json()
        url = found[0]["00081190"]["Value"][0]
        response = requests.get(url, headers={"Accept": AS_STORED}, timeout=30)
        assert response.status_code == 200 and response.content == ledger.sent[sop]
    return sops


def test_sigkill_during_stow_never_loses_an_acknowledged_instance(live_server: LiveServer):
    rng = random.Random(1729)
    ledger = Ledger()
    started = time.monotonic()
    kills = startup_kills = 0
    while kills < KILLS:
        ledger.acknowledged_this_round = set()
        send = functools.partial(send_until_the_server_dies, live_server.url, ledger)
        kill_during(live_server, send, rng, (0.05, 0.6))
        kills += 1
        assert not ledger.unexpected, ledger.unexpected[:5]
        if kills % 5 == 0:
            kill_while_starting(live_server, rng)
            startup_kills += 1
        live_server.start()
        check_archive(live_server, ledger, fetch=ledger.acknowledged_this_round)
    seconds = time.monotonic() - started
    final = check_archive(live_server, ledger, fetch=set())
    print(
        f"\n{kills} kills during STOW and {startup_kills} during startup survived in "
        f"{seconds:.0f} s: {ledger.requests} requests answered, {len(ledger.sent)} instances "
        f"sent, {len(ledger.acknowledged)} acknowledged, {len(final)} stored, all intact"
    )
    assert len(ledger.acknowledged) > KILLS * CLIENTS  # the rounds did store instances
    assert len(ledger.sent) > len(ledger.acknowledged)  # and kills cut requests short


# deletes, with the trash -------------------------------------------------------------------

DELETE_KILLS = 8


@dataclass
class Deletions:
    """What is stored (study, series, sop -> bytes), and the deletes the server answered."""

    stored: dict[tuple[str, str, str], bytes]
    acknowledged: set[str] = field(default_factory=set)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sop_bytes(self) -> dict[str, bytes]:
        return {sop: data for (_, _, sop), data in self.stored.items()}


def stock_for_deletes(url: str) -> Deletions:
    stored = {}
    for study, series in itertools.product(range(3), range(3)):
        batch = [
            instance_bytes(f"trash-study-{study}", f"trash-{study}-{series}", number)
            for number in range(series * 6, series * 6 + 6)
        ]
        body, content_type = multipart([data for _, data in batch])
        response = requests.post(
            f"{url}/studies", data=body, headers={"Content-Type": content_type}, timeout=60
        )
        assert response.status_code == 200, response.text[:300]
        for sop, data in batch:
            ds_study, ds_series = _uids_of(data)
            stored[(ds_study, ds_series, sop)] = data
    return Deletions(stored)


def _uids_of(data: bytes) -> tuple[str, str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def delete_until_the_server_dies(url: str, deletions: Deletions, seed: int) -> None:
    """DELETE (or reject) random instances, series and studies; 204/200 and 404 (deleted by
    another client) are the only answers expected."""
    rng = random.Random(seed)
    targets = sorted(deletions.stored)
    with requests.Session() as session:
        while True:
            study, series, sop = rng.choice(targets)
            level = rng.choices(["instance", "series", "study"], [6, 3, 1])[0]
            path = f"/studies/{study}"
            if level != "study":
                path += f"/series/{series}"
            if level == "instance":
                path += f"/instances/{sop}"
            reject = rng.random() < 0.2
            try:
                if reject:
                    response = session.post(f"{url}{path}/reject/113001%5EDCM", timeout=30)
                else:
                    response = session.delete(f"{url}{path}", timeout=30)
            except requests.ConnectionError:
                return
            removed = {
                each
                for (st, se, each) in targets
                if st == study
                and (level == "study" or se == series)
                and (level != "instance" or each == sop)
            }
            with deletions.lock:
                if response.status_code in (200, 204):
                    deletions.acknowledged |= removed
                elif response.status_code != 404:
                    deletions.unexpected.append(f"{response.status_code} {response.text[:200]}")


def check_archive_and_trash(server: LiveServer, deletions: Deletions) -> tuple[set, set]:
    """Every instance is in the archive or in the trash, whole, never in both and never
    lost; an acknowledged delete stays deleted; nothing is left half moved."""
    archive = server.archive
    sent = deletions.sop_bytes()
    assert not list(archive.glob(".trash/*.pending")), "a removal was left half done"
    assert temporary_files(archive) == []
    served = listed(server)
    on_disk = {path.stem: path for path in archive.glob("*/*/*.dcm")}
    assert set(on_disk) == served, "the index and the folder disagree"
    trashed = {path.stem: path for path in archive.glob(".trash/*/*/*/*.dcm")}
    assert not served & set(trashed), "an instance is both stored and in the trash"
    assert served | set(trashed) == set(sent), "an instance was lost"
    assert deletions.acknowledged <= set(trashed), "an acknowledged delete was undone"
    for sop, path in [*on_disk.items(), *trashed.items()]:
        assert path.read_bytes() == sent[sop], f"{sop} is not what was sent"
        assert path.with_suffix(".json").is_file(), f"{sop} has no sidecar"
    for entry in archive.glob(".trash/*"):
        assert (entry / "manifest.json").is_file(), f"{entry.name} has no manifest"
    return served, set(trashed)


def restore_all(server: LiveServer) -> None:
    command = [sys.executable, "-m", "localdicom", "trash", "restore", str(server.archive)]
    done = subprocess.run([*command, "--all"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_sigkill_during_deletes_loses_nothing(live_server: LiveServer):
    """Clients DELETE and reject at random levels until the server is SIGKILLed; after the
    restart (killed during its startup too, every third round) each instance is whole in
    the archive or in the trash, and ``trash restore --all`` brings every one back."""
    rng = random.Random(4242)
    live_server.stop()
    live_server.extra_args = ("--fsync",)  # flushes before each entry's sealing rename: a
    live_server.start()  # wider window for a kill to land between a move and its seal
    deletions = stock_for_deletes(live_server.url)
    acknowledged = 0
    for kills in range(1, DELETE_KILLS + 1):
        deletions.acknowledged = set()
        kill_during(
            live_server,
            lambda _, seed: delete_until_the_server_dies(live_server.url, deletions, seed),
            rng,
            (0.02, 0.3),
        )
        assert not deletions.unexpected, deletions.unexpected[:5]
        if kills % 3 == 0:
            kill_while_starting(live_server, rng)
        live_server.start()
        check_archive_and_trash(live_server, deletions)
        acknowledged += len(deletions.acknowledged)
        restore_all(live_server)
        deletions.acknowledged = set()
        served, trashed = check_archive_and_trash(live_server, deletions)
        assert served == set(deletions.sop_bytes()) and not trashed
    put_back = live_server.log.read_text().count("was cut short: put back in place")
    print(
        f"\n{DELETE_KILLS} kills during deletes: {acknowledged} deletes acknowledged, "
        f"{put_back} instances of cut-short removals put back at start, none lost"
    )
    assert acknowledged > DELETE_KILLS  # the rounds did delete


# --overwrite, with the trash -------------------------------------------------------------------

OVERWRITE_KILLS = 6
OVERWRITTEN = 12  # instances, each sent again and again in new versions


def version_bytes(index: int, version: int) -> tuple[str, bytes]:
    ds = ct_slice("overwrite-study", "overwrite-series", index, size=64)
    ds.ImageComments = f"version {version}"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return str(ds.SOPInstanceUID), buffer.getvalue()


@dataclass
class Versions:
    """Every version sent of each instance, and those the server acknowledged."""

    sent: dict[str, set[bytes]] = field(default_factory=dict)
    acknowledged: dict[str, set[bytes]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    numbers: itertools.count = field(default_factory=itertools.count)


def overwrite_until_the_server_dies(url: str, versions: Versions, seed: int) -> None:
    rng = random.Random(seed)
    with requests.Session() as session:
        while True:
            sop, data = version_bytes(rng.randrange(OVERWRITTEN), next(versions.numbers))
            with versions.lock:
                versions.sent.setdefault(sop, set()).add(data)
            try:
                response = session.post(
                    f"{url}/studies",
                    data=data,
                    headers={"Content-Type": "application/dicom"},
                    timeout=30,
                )
            except requests.ConnectionError:
                return
            with versions.lock:
                if response.status_code == 200:
                    versions.acknowledged.setdefault(sop, set()).add(data)
                else:
                    versions.unexpected.append(f"{response.status_code} {response.text[:200]}")


def check_versions(server: LiveServer, versions: Versions) -> int:
    """One version of each instance is stored, whole; every version acknowledged is stored
    or in the trash; nothing is left half moved. How many versions the trash holds."""
    archive = server.archive
    assert not list(archive.glob(".trash/*.pending")), "a replacement was left half done"
    assert temporary_files(archive) == []
    on_disk = {path.stem: path for path in archive.glob("*/*/*.dcm")}
    assert set(on_disk) == listed(server) == set(versions.sent)
    trashed = list(archive.glob(".trash/*/*/*/*.dcm"))
    kept: dict[str, set[bytes]] = {}
    for path in [*on_disk.values(), *trashed]:
        data = path.read_bytes()
        assert data in versions.sent[path.stem], f"{path} is not a version that was sent"
        kept.setdefault(path.stem, set()).add(data)
    for sop, acknowledged in versions.acknowledged.items():
        assert acknowledged <= kept[sop], f"an acknowledged version of {sop} was lost"
    return len(trashed)


def test_sigkill_during_overwrites_keeps_every_version(live_server: LiveServer):
    """With ``--overwrite``, clients send new versions of the same instances until the server
    is SIGKILLed: after each restart every version it acknowledged is stored or in the
    trash, and what is stored is one whole version."""
    rng = random.Random(6174)
    live_server.stop()
    live_server.extra_args = ("--overwrite", "--fsync")
    live_server.start()
    versions = Versions()
    for index in range(OVERWRITTEN):  # the first versions, acknowledged before any kill
        sop, data = version_bytes(index, next(versions.numbers))
        response = requests.post(
            f"{live_server.url}/studies", data=data, headers={"Content-Type": "application/dicom"}
        )
        assert response.status_code == 200
        versions.sent[sop] = {data}
        versions.acknowledged[sop] = {data}
    for kills in range(1, OVERWRITE_KILLS + 1):
        kill_during(
            live_server,
            lambda _, seed: overwrite_until_the_server_dies(live_server.url, versions, seed),
            rng,
            (0.05, 0.5),
        )
        assert not versions.unexpected, versions.unexpected[:5]
        if kills % 3 == 0:
            kill_while_starting(live_server, rng)
        live_server.start()
        trashed = check_versions(live_server, versions)
    acknowledged = sum(len(each) for each in versions.acknowledged.values())
    print(
        f"\n{OVERWRITE_KILLS} kills during overwrites: {acknowledged} versions acknowledged, "
        f"{trashed} kept in the trash, none lost"
    )
    assert acknowledged > OVERWRITTEN + OVERWRITE_KILLS  # the rounds did replace
