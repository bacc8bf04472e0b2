"""Pull from a DICOM node (pynetdicom as the SCU); push is :mod:`.cstore`.

Pull: C-FIND at the level the selection needs, down to the instances (Study Root, PS3.4
C.6.2), then C-GET of each series (of its missing instances only, as a UID list, PS3.4
C.4.3) with a storage context per SOP class and transfer syntax, so that the node sends each
instance in the syntax it stores it in; the received file goes through :class:`Intake`.
With ``move_ae``, C-MOVE to that AE instead (PS3.4 C.4.2): a ``localdicom serve ARCHIVE
--dicom-port`` that the node knows by that title receives and stores them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind as FIND,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet as GET,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelMove as MOVE,
)

from localdicom.archive import Layout, TransferRecord, sidecar
from localdicom.dicom.qido import INSTANCE, SERIES, STUDY
from localdicom.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from localdicom.dimse.sending import MAX_CONTEXTS
from localdicom.importer import ImportOptions, Progress, ingest_sink
from localdicom.selection import Selection
from localdicom.transfer.intake import Intake
from localdicom.transfer.options import TransferOptions
from localdicom.transfer.plan import Announced, own_level
from localdicom.transfer.received import Received
from localdicom.transfer.remote import DicomNode
from localdicom.transfer.report import TransferReport
from localdicom.transfer.running import is_pulled

#: Storage statuses (PS3.4 B.2.3; PS3.7 C.4.2): warnings still store the instance.
SUCCESS, DUPLICATE = 0x0000, 0x0111
WARNINGS = frozenset({0xB000, 0xB006, 0xB007})
PENDING = frozenset({0xFF00, 0xFF01})
QR_LEVEL = {STUDY: "STUDY", SERIES: "SERIES", INSTANCE: "IMAGE"}
#: Transfer syntaxes a C-GET proposes per SOP class, each in a context of its own, so the
#: node can send what it stores (PS3.5 Table A-1, the common ones).
RECEIVED_SYNTAXES = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.1.99",  # deflated
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
)
ATTEMPTS = 5


class DimseError(Exception):
    """The node cannot be reached or refused the association."""


def application(options: TransferOptions) -> AE:
    _config.STORE_RECV_CHUNKED_DATASET = True  # received datasets go to a file, not memory
    _config.STORE_SEND_CHUNKED_DATASET = True  # stored files go out without decoding
    _config.LOG_HANDLER_LEVEL = "none"
    ae = AE(options.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    return ae


def associate(ae: AE, node: DicomNode, **keywords: Any) -> Association:
    """An association, tried again with backoff while the node cannot be reached."""
    for attempt in range(ATTEMPTS):
        assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, **keywords)
        if assoc.is_established:
            return assoc
        if assoc.is_rejected:
            raise DimseError(f"{node.address} rejected the association (is our AE title known?)")
        time.sleep(0.5 * 2**attempt)
    raise DimseError(f"{node.address} cannot be reached")


# C-FIND ------------------------------------------------------------------------------------


def find(ae: AE, node: DicomNode, level: str, keys: dict[str, str]) -> list[Dataset]:
    """The matches of a Study Root C-FIND at ``level`` (STUDY, SERIES, IMAGE)."""
    ae.requested_contexts = []
    ae.add_requested_context(FIND)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        setattr(identifier, keyword, "")
    for keyword, value in keys.items():
        setattr(identifier, keyword, value.replace(",", "\\"))  # a list (PS3.4 C.2.2.2.2)
    assoc = associate(ae, node)
    if not assoc.accepted_contexts:
        assoc.release()
        raise DimseError(f"{node.address} does not offer C-FIND (Study Root)")
    try:
        matches = []
        for status, found in assoc.send_c_find(identifier, FIND):
            code = getattr(status, "Status", None)
            if code is None:
                raise DimseError(f"{node.address} stopped answering a C-FIND")
            if code in PENDING and found is not None:
                matches.append(found)
            elif code not in PENDING and code != SUCCESS:
                raise DimseError(f"{node.address} answered C-FIND with status 0x{code:04X}")
        return matches
    finally:
        assoc.release()


def listed(ae: AE, node: DicomNode, selection: Selection) -> dict[str, tuple[Announced, str]]:
    """SOP Instance UID -> (the instance, its SOP class) for the selection on the node."""
    found: dict[str, tuple[Announced, str]] = {}
    for level, params in selection.searches():
        series: list[tuple[str, str]] = []
        keys = dict(params)
        if level == STUDY:
            for study in find(ae, node, "STUDY", keys):
                uid = str(study.StudyInstanceUID)
                below = {"StudyInstanceUID": uid, **dict(own_level(params, SERIES))}
                series += [(uid, str(m.SeriesInstanceUID)) for m in find(ae, node, "SERIES", below)]
        elif level == SERIES:
            matches = find(ae, node, "SERIES", keys)
            series = [(str(m.StudyInstanceUID), str(m.SeriesInstanceUID)) for m in matches]
        for study, each in series:
            keys = {"StudyInstanceUID": study, "SeriesInstanceUID": each}
            keys |= dict(own_level(params, INSTANCE))
            for match in find(ae, node, "IMAGE", keys):
                _add(found, match)
        if level == INSTANCE:
            for match in find(ae, node, "IMAGE", keys):
                _add(found, match)
    return found


def _add(found: dict[str, tuple[Announced, str]], match: Dataset) -> None:
    instance = Announced(
        str(match.StudyInstanceUID), str(match.SeriesInstanceUID), str(match.SOPInstanceUID)
    )
    found.setdefault(instance.sop, (instance, str(match.get("SOPClassUID", ""))))


# pull ----------------------------------------------------------------------------------------


def pull_dimse(
    node: DicomNode,
    archive_root: Path,
    selection: Selection,
    options: TransferOptions,
    report: TransferReport,
    record: TransferRecord,
    progress: Progress,
    stop: Any,
) -> None:
    ae = application(options)
    try:
        instances = listed(ae, node, selection)
    except DimseError as exc:
        report.errors.append((node.address, str(exc)))
        return
    layout = Layout(archive_root)
    pulled = record.digests("pulled")
    missing = {
        sop: each for sop, each in instances.items() if not is_pulled(layout, each[0], pulled)
    }
    report.duplicates += len(instances) - len(missing)
    if options.dry_run:
        report.dry_run += [each.path.lstrip("/") for each, _ in missing.values()]
        report.would_move = len(missing)
        return
    progress.add_total(len(instances))
    progress.advance(len(instances) - len(missing), 0)
    if options.move_ae:
        _move(ae, node, layout, missing, options.move_ae, report, pulled, progress)
        return
    import_options = ImportOptions(overwrite=options.overwrite, fsync=options.fsync)
    with ingest_sink(archive_root, import_options) as (sink, server):
        report.server = server
        intake = Intake(
            sink, report, record, progress, lambda: layout.new_staging_file(sink.staging)
        )
        receiver = _Receiver(intake, layout, sink.staging, missing)
        _get_all(ae, node, instances, missing, receiver, stop)
    if server is None and report.stored and not options.fsync:
        os.sync()  # one flush for the whole pull, as import does


def _get_all(
    ae: AE,
    node: DicomNode,
    instances: dict[str, tuple[Announced, str]],
    missing: dict[str, tuple[Announced, str]],
    receiver: _Receiver,
    stop: Any,
) -> None:
    """A C-GET per series; what a series' C-GET did not bring is an error (for the re-run)."""
    for series in _by_series(missing):
        if stop.requested:
            return
        try:
            code = _get(ae, node, series, instances, receiver, stop)
            reason = f"{node.address} did not send it (C-GET status 0x{code:04X})"
        except DimseError as exc:
            reason = str(exc)
        if stop.requested:
            return
        for sop in series:
            if sop not in receiver.received:
                receiver.intake.fail(missing[sop][0].path.lstrip("/"), reason)


def _by_series(missing: dict[str, tuple[Announced, str]]) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for sop, (instance, _) in missing.items():
        groups.setdefault(instance.series, []).append(sop)
    return list(groups.values())


class _Receiver:
    """EVT_C_STORE of a C-GET: each received file into the sink's staging, then the intake."""

    def __init__(
        self, intake: Intake, layout: Layout, staging: Path, expected: dict[str, Any]
    ) -> None:
        self.intake = intake
        self.layout = layout
        self.staging = staging
        self.expected = expected
        self.received: set[str] = set()

    def __call__(self, event: Any) -> int:
        sop = str(event.request.AffectedSOPInstanceUID)
        wanted = self.expected.get(sop)
        staged = self.layout.new_staging_file(self.staging)
        try:
            shutil.copyfile(event.dataset_path, staged)
            with staged.open("rb") as fp:
                digest = hashlib.file_digest(fp, "sha256").hexdigest()
        except OSError:
            staged.unlink(missing_ok=True)
            return 0xA700
        self.received.add(sop)
        announced = wanted[0].uids if wanted else None
        label = wanted[0].path.lstrip("/") if wanted else sop
        received = Received(staged=staged, size=staged.stat().st_size, digest=digest)
        self.intake.take(received, announced, label)
        return SUCCESS


def _get(
    ae: AE,
    node: DicomNode,
    sops: list[str],
    instances: dict[str, tuple[Announced, str]],
    receiver: _Receiver,
    stop: Any,
) -> int:
    """One C-GET for these instances of one series, at IMAGE level with a UID list."""
    first = instances[sops[0]][0]
    classes = sorted({instances[sop][1] for sop in sops} - {""})
    per_class = max(1, (MAX_CONTEXTS - 1) // len(RECEIVED_SYNTAXES))
    for start in range(0, max(len(classes), 1), per_class):
        group = classes[start : start + per_class]
        ae.requested_contexts = []
        ae.add_requested_context(GET)
        for sop_class in group:
            for syntax in RECEIVED_SYNTAXES:
                ae.add_requested_context(sop_class, syntax)
        roles = [build_role(sop_class, scp_role=True) for sop_class in group]
        handlers = [(evt.EVT_C_STORE, receiver)]
        assoc = associate(ae, node, ext_neg=roles, evt_handlers=handlers)
        if not any(context.abstract_syntax == GET for context in assoc.accepted_contexts):
            assoc.release()
            raise DimseError(f"{node.address} does not offer C-GET: pull with --move-ae")
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE"
        identifier.StudyInstanceUID = first.study
        identifier.SeriesInstanceUID = first.series
        identifier.SOPInstanceUID = [sop for sop in sops if instances[sop][1] in group]
        code = _run(assoc, assoc.send_c_get(identifier, GET), node, stop)
    return code


def _run(assoc: Association, responses: Iterator[Any], node: DicomNode, stop: Any) -> int:
    """Read a C-GET's or C-MOVE's responses (aborting on a stop); the final status."""
    code = SUCCESS
    try:
        for status, _ in responses:
            if "Status" not in status:
                raise DimseError(f"{node.address} stopped answering")
            code = int(status.Status)
            if stop.requested:
                assoc.abort()
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return code


def _move(
    ae: AE,
    node: DicomNode,
    layout: Layout,
    missing: dict[str, tuple[Announced, str]],
    destination: str,
    report: TransferReport,
    pulled: dict[str, str],
    progress: Progress,
) -> None:
    """C-MOVE per series to ``destination``; what arrived is read from the archive."""
    ae.requested_contexts = []
    ae.add_requested_context(MOVE)
    for sops in _by_series(missing):
        first = missing[sops[0]][0]
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE"
        identifier.StudyInstanceUID, identifier.SeriesInstanceUID = first.study, first.series
        identifier.SOPInstanceUID = sops
        try:
            assoc = associate(ae, node)
            _run(assoc, assoc.send_c_move(identifier, destination, MOVE), node, _Never())
        except DimseError as exc:
            report.notes.append(str(exc))
        for sop in sops:
            instance = missing[sop][0]
            try:
                stored = sidecar.read(layout.instance_file(*instance.uids))
            except (OSError, ValueError, KeyError, TypeError):
                report.errors.append(
                    (
                        instance.path.lstrip("/"),
                        f"not in the archive after the C-MOVE to {destination}: does "
                        f"{node.address} know {destination}, and does 'localdicom serve "
                        "--dicom-port' answer as it on this archive?",
                    )
                )
                progress.advance(1, 0)
                continue
            report.stored += 1
            report.size += stored.size
            pulled[sop] = stored.digest
            progress.advance(1, stored.size)


class _Never:
    requested = False
