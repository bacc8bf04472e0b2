"""``localdicom push``: the selected instances of the archive (read from the sidecars, as
:func:`local_instances` does, without writing) to a remote.

To DICOMweb: STOW-RS in batches of at most ``batch_bytes`` (one instance bigger than that
goes alone), ``jobs`` batches at once. To a DICOM node: C-STORE (:mod:`.dimse`). The record
says what was pushed with which digest: the same digest is not sent again; a different one
(the instance changed here since) is a conflict, sent only with ``--overwrite``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localdicom.archive import StoredInstance, TransferRecord, open_record
from localdicom.catalog import FailureReason
from localdicom.console import stopping_on_signals
from localdicom.importer import NoProgress, Progress
from localdicom.selection import Selection, local_instances
from localdicom.transfer.dicomweb import Answer, DicomwebClient, RemoteError
from localdicom.transfer.options import TransferOptions
from localdicom.transfer.remote import Credentials, DicomNode
from localdicom.transfer.report import TransferReport
from localdicom.transfer.running import Stop
from localdicom.workers import Workers

if TYPE_CHECKING:
    from localdicom.transfer.deidentified import PushDeid

#: STOW-RS response attributes (PS3.18 Table 10.5.3-1, PS3.3 C.12.1.1.x).
REFERENCED_SOP_SEQUENCE, FAILED_SOP_SEQUENCE = "00081199", "00081198"
REFERENCED_SOP_INSTANCE, FAILURE_REASON, WARNING_REASON = "00081155", "00081197", "00081196"
#: Azure's DICOM service: "the same instance has already been stored" (its STOW failure
#: and warning codes list, https://learn.microsoft.com/azure/healthcare-apis/dicom).
AZURE_DUPLICATE = 45070
DUPLICATES = frozenset({int(FailureReason.DUPLICATE_SOP_INSTANCE), AZURE_DUPLICATE})

Local = tuple[Path, StoredInstance]


def push(
    address: str,
    node: DicomNode | None,
    archive_root: Path,
    selection: Selection,
    credentials: Credentials,
    options: TransferOptions,
    progress: Progress | None = None,
    *,
    deid: PushDeid | None = None,
    follow: Callable[[Pushing, Path, Selection], None] | None = None,
) -> TransferReport:
    """Push the selection of the archive at ``archive_root`` to the remote at ``address``;
    de-identified with ``deid``; then, with ``follow`` (:class:`.follow.Follow`), what the
    archive receives, until SIGINT or SIGTERM."""
    report = TransferReport(archive_root, verb="Pushed", remote=address, hide=credentials.hide)
    record = open_record(archive_root, deid.record_address(address) if deid else address)
    started = time.perf_counter()
    run = Pushing(address, node, credentials, options, report, record, progress or NoProgress())
    run.deid = deid
    try:
        with stopping_on_signals(run.stop):
            if follow is None:
                run.send(list(local_instances(archive_root, selection)))
            else:
                follow(run, archive_root, selection)
    finally:
        if deid is not None:
            report.notes += deid.finish()
    report.interrupted = run.stop.requested
    report.followed = follow is not None
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class Pushing:
    """One push: to where, how, and what it has counted so far."""

    address: str
    node: DicomNode | None
    credentials: Credentials
    options: TransferOptions
    report: TransferReport
    record: TransferRecord
    progress: Progress
    stop: Stop = field(default_factory=Stop)
    deid: PushDeid | None = None

    def send(self, selected: list[Local]) -> None:
        """Send what of ``selected`` the record does not show sent as it is now."""
        if self.deid is not None:
            selected = self.deid.kept(selected)
        instances = _to_send(selected, self.record, self.options, self.report, self.label)
        report = self.report
        if self.options.dry_run:
            report.dry_run += [self.label(stored) for _, stored in instances]
            report.would_move += len(instances)
            report.size += sum(stored.size for _, stored in instances)
            return
        self.progress.add_total(len(selected))
        self.progress.advance(len(selected) - len(instances), 0)
        try:
            if self.node is not None:
                from localdicom.transfer.cstore import push_dimse  # pynetdicom: for DICOM only

                push_dimse(self, instances)
            elif instances:
                asyncio.run(_push_dicomweb(self, instances))
        finally:
            self.record.save()

    def label(self, stored: StoredInstance) -> str:
        """The instance in the summary: by its UIDs here (and those sent, de-identified)."""
        return _label(stored) if self.deid is None else self.deid.label(stored)

    def sent_sop(self, stored: StoredInstance) -> str:
        """The SOP Instance UID the remote receives, and answers about."""
        return stored.header.sop_uid if self.deid is None else self.deid.sop(stored)


def _to_send(
    selected: list[Local],
    record: TransferRecord,
    options: TransferOptions,
    report: TransferReport,
    label: Callable[[StoredInstance], str],
) -> list[Local]:
    """What the record does not show pushed as it is now; a changed instance is a conflict
    unless ``overwrite``."""
    pushed = record.digests("pushed")
    result = []
    for dcm, stored in selected:
        earlier = pushed.get(stored.header.sop_uid)
        if earlier == stored.digest:
            report.duplicates += 1
        elif earlier is not None and not options.overwrite:
            report.conflicts.append(
                (
                    label(stored),
                    "changed here since it was pushed; the remote keeps the earlier one "
                    "(push with --overwrite to send it again)",
                )
            )
        else:
            result.append((dcm, stored))
    return result


def _label(stored: StoredInstance) -> str:
    header = stored.header
    return f"studies/{header.study_uid}/series/{header.series_uid}/instances/{header.sop_uid}"


def batches(instances: list[Local], limit: int) -> list[list[Local]]:
    """Consecutive instances (the order of the archive: study by study) in groups of at most
    ``limit`` bytes; one bigger than ``limit`` alone."""
    result: list[list[Local]] = []
    current: list[Local] = []
    size = 0
    for instance in instances:
        if current and size + instance[1].size > limit:
            result.append(current)
            current, size = [], 0
        current.append(instance)
        size += instance[1].size
    if current:
        result.append(current)
    return result


async def _push_dicomweb(run: Pushing, instances: list[Local]) -> None:
    options = run.options
    client = DicomwebClient(
        run.address, run.credentials, options.tls, options.jobs, backoff=options.backoff
    )
    queue = deque(batches(instances, options.batch_bytes))
    pool = Workers(options.workers) if run.deid is not None else None
    sender = _Sender(client, run, pool)

    async def worker() -> None:
        while queue and not run.stop.requested:
            await sender.send(queue.popleft())
            if time.monotonic() - sender.saved > 5:
                run.record.save()
                sender.saved = time.monotonic()

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, options.jobs))))
    finally:
        run.report.retries += client.retries
        await client.close()
        if pool is not None:
            pool.close()


class _Sender:
    """Sends a batch and counts what the remote answered for each of its instances."""

    def __init__(self, client: DicomwebClient, run: Pushing, pool: Workers | None) -> None:
        self.client = client
        self.run = run
        self.report = run.report
        self.pushed = run.record.digests("pushed")
        self.progress = run.progress
        self.pool = pool
        self.saved = time.monotonic()

    async def send(self, batch: list[Local]) -> None:
        parts = await self._parts(batch)
        batch = [instance for instance in batch if instance[1].header.sop_uid in parts]
        if not batch:
            return
        try:
            answer = await self.client.store([parts[s.header.sop_uid] for _, s in batch])
        except RemoteError as exc:
            for _, stored in batch:
                self._count(stored, None, str(exc))
            return
        outcomes = stow_outcomes(answer, [self.run.sent_sop(stored) for _, stored in batch])
        if outcomes is None and len(batch) > 1:  # 413, or an answer not per instance: singly
            for instance in batch:
                await self.send([instance])
            return
        for _, stored in batch:
            sop = self.run.sent_sop(stored)
            outcome, reason = (outcomes or {}).get(sop, (None, _said(answer)))
            self._count(stored, outcome, reason)

    async def _parts(self, batch: list[Local]) -> dict[str, tuple[Path | bytes, int]]:
        """What is sent of each instance, by its SOP Instance UID here: the stored file, or
        its de-identified bytes (made in the workers; one that cannot be is an error)."""
        deid = self.run.deid
        if deid is None or self.pool is None:
            return {stored.header.sop_uid: (dcm, stored.size) for dcm, stored in batch}
        made = await asyncio.gather(
            *(deid.rewrite(self.pool, dcm) for dcm, _ in batch), return_exceptions=True
        )
        parts: dict[str, tuple[Path | bytes, int]] = {}
        for (_, stored), data in zip(batch, made, strict=True):
            if isinstance(data, bytes):
                parts[stored.header.sop_uid] = (data, len(data))
            elif isinstance(data, Exception):
                self._count(stored, None, f"cannot be de-identified: {data}")
            else:
                raise data
        return parts

    def _count(self, stored: StoredInstance, outcome: str | None, reason: str) -> None:
        report = self.report
        if outcome == "stored":
            report.stored += 1
            report.size += stored.size
        elif outcome == "already there":
            report.duplicates += 1
        else:
            report.errors.append((self.run.label(stored), self.client.say(reason)))
        if outcome is not None:
            self.pushed[stored.header.sop_uid] = stored.digest
        self.progress.advance(1, stored.size if outcome == "stored" else 0)


def stow_outcomes(answer: Answer, sops: list[str]) -> dict[str, tuple[str | None, str]] | None:
    """Per SOP Instance UID: "stored", "already there" (a duplicate answer: Failure Reason
    0x0111, PS3.18 10.5.3 / PS3.4 B.2.3, or Azure's 45070, as failure or warning) or None
    (an error), with the reason. None when the answer does not say per instance: a 413, or
    a 409 or 4xx without a readable body."""
    try:
        document = answer.json() if answer.body.strip() else None
    except ValueError:
        document = None
    if isinstance(document, list):
        document = document[0] if document else None
    if answer.status in (200, 202) and not isinstance(document, dict):
        return {sop: ("stored", "") for sop in sops} if answer.status == 200 else None
    if not isinstance(document, dict):
        return None if len(sops) > 1 or answer.status == 413 else _whole(answer, sops)
    outcomes: dict[str, tuple[str | None, str]] = {}
    for item in _items(document, REFERENCED_SOP_SEQUENCE):
        warning = _value(item, WARNING_REASON)
        already = warning in DUPLICATES
        outcomes[str(_value(item, REFERENCED_SOP_INSTANCE))] = (
            "already there" if already else "stored",
            "",
        )
    for item in _items(document, FAILED_SOP_SEQUENCE):
        reason = _value(item, FAILURE_REASON)
        sop = str(_value(item, REFERENCED_SOP_INSTANCE))
        if reason in DUPLICATES:
            outcomes[sop] = ("already there", "")
        else:
            code = f"0x{reason:04X}" if isinstance(reason, int) else str(reason)
            outcomes[sop] = (
                None,
                f"the remote refused it ({answer.status}, Failure Reason {code}): {_said(answer)}",
            )
    return outcomes


def _whole(answer: Answer, sops: list[str]) -> dict[str, tuple[str | None, str]]:
    """A single instance's answer without a body: 409 is a duplicate, else an error."""
    if answer.status == 409:
        return {sop: ("already there", "") for sop in sops}
    return {sop: (None, f"the remote answered {answer.status}: {_said(answer)}") for sop in sops}


def _items(document: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    value = document.get(tag, {})
    items = value.get("Value", []) if isinstance(value, dict) else []
    return [item for item in items if isinstance(item, dict)]


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def _said(answer: Answer) -> str:
    return (
        answer.warning or answer.body[:200].decode("utf-8", "replace")
    ).strip() or "no reason given"
