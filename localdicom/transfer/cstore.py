"""Push to a DICOM node: C-STORE of each instance (PS3.4 B), proposing per SOP class its
stored syntaxes and the two uncompressed ones (:func:`move_contexts`, as C-MOVE does); it
goes as stored when that was accepted, else rewritten in one that was
(:func:`choose_syntax`, :func:`transcode`). An association that breaks is opened again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
from pynetdicom import AE
from pynetdicom.association import Association

from localdicom.deid import DeidentifyError
from localdicom.dicom.pixels import transcode
from localdicom.dicom.syntaxes import instance_targets
from localdicom.dimse.selection import Match
from localdicom.dimse.sending import MAX_CONTEXTS, choose_syntax, move_contexts, sendable_syntaxes
from localdicom.transfer.dimse import (
    ATTEMPTS,
    DUPLICATE,
    SUCCESS,
    WARNINGS,
    DimseError,
    application,
    associate,
)
from localdicom.transfer.remote import DicomNode

if TYPE_CHECKING:
    from localdicom.transfer.push import Pushing


def push_dimse(run: Pushing, instances: list[tuple[Path, Any]]) -> None:
    """C-STORE ``instances`` to ``run.node``, de-identified first with ``run.deid``."""
    assert run.node is not None
    ae = application(run.options)
    for group in _context_groups(instances):
        if run.stop.requested:
            return
        matches = [
            Match(s.header.sop_class_uid, s.header.sop_uid, s.header.transfer_syntax, dcm)
            for dcm, s in group
        ]
        ae.requested_contexts = move_contexts(matches)
        sender = _Sender(ae, run.node, run)
        try:
            for (dcm, stored), match in zip(group, matches, strict=True):
                if run.stop.requested:
                    break
                sender.send(dcm, stored, match)
        finally:
            sender.close()


def _context_groups(instances: list[tuple[Path, Any]]) -> list[list[tuple[Path, Any]]]:
    """The instances in groups whose contexts (one per SOP class, one per class and stored
    syntax) fit in one association (:data:`MAX_CONTEXTS`)."""
    groups: list[list[tuple[Path, Any]]] = []
    pairs: set[tuple[str, str]] = set()
    current: list[tuple[Path, Any]] = []
    for dcm, stored in instances:
        pair = (stored.header.sop_class_uid, stored.header.transfer_syntax)
        grown = pairs | {pair}
        if len(grown) + len({sop_class for sop_class, _ in grown}) > MAX_CONTEXTS and current:
            groups.append(current)
            current, grown = [], {pair}
        pairs = grown
        current.append((dcm, stored))
    if current:
        groups.append(current)
    return groups


class _Sender:
    """C-STORE of one instance after another on one association, opened again when lost."""

    def __init__(self, ae: AE, node: DicomNode, run: Pushing) -> None:
        self.ae = ae
        self.node = node
        self.run = run
        self.report = run.report
        self.pushed = run.record.digests("pushed")
        self.progress = run.progress
        self.assoc: Association | None = None

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()

    def send(self, dcm: Path, stored: Any, match: Match) -> None:
        label = self.run.label(stored)
        for attempt in range(ATTEMPTS):
            try:
                code, comment = self._store(dcm, match)
            except (DimseError, DeidentifyError) as exc:
                self.report.errors.append((label, str(exc)))
                self.progress.advance(1, 0)
                return
            if code is not None:
                break
            self.report.retries += 1
            time.sleep(0.5 * 2**attempt)
        self._count(label, stored, code, comment)

    def _store(self, dcm: Path, match: Match) -> tuple[int | None, str]:
        """The C-STORE status (None: the association was lost) and its Error Comment."""
        if self.assoc is None or not self.assoc.is_established:
            self.assoc = associate(self.ae, self.node)
        accepted = sendable_syntaxes(self.assoc.accepted_contexts)
        targets = instance_targets(match.transfer_syntax)
        syntax = choose_syntax(match.transfer_syntax, accepted.get(match.sop_class, []), targets)
        if syntax is None:
            return -1, f"{self.node.address} accepts no transfer syntax this instance can be in"
        deid = self.run.deid
        if syntax == match.transfer_syntax and deid is None:
            answer = self.assoc.send_c_store(dcm)
        else:
            target = None if syntax == match.transfer_syntax else syntax
            data = deid.rewrite_here(dcm, target) if deid else transcode(dcm, syntax)
            answer = self.assoc.send_c_store(pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)))
        code = answer.get("Status")
        return (None if code is None else int(code)), str(answer.get("ErrorComment", ""))

    def _count(self, label: str, stored: Any, code: int | None, comment: str) -> None:
        report = self.report
        if code == SUCCESS or code in WARNINGS:
            report.stored += 1
            report.size += stored.size
        elif code == DUPLICATE:
            report.duplicates += 1
        elif code is None:
            report.errors.append((label, f"{self.node.address} kept breaking the association"))
        else:
            said = f": {comment}" if comment else ""
            shown = f"0x{code:04X}" if code >= 0 else "refused"
            report.errors.append((label, f"C-STORE status {shown}{said}"))
        if code in (SUCCESS, DUPLICATE) or code in WARNINGS:
            self.pushed[stored.header.sop_uid] = stored.digest
        self.progress.advance(1, stored.size if code == SUCCESS else 0)
