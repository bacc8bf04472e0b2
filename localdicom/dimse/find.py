"""C-FIND SCP, Patient Root and Study Root (PS3.4 C.4.1): answered from the in-memory index,
as QIDO-RS is, so what any way in stored is found at once.

The search runs once, on the loop; its matches are answered in small batches, each a short
call on the loop (plus, for keys memory does not hold, sidecar reads in a thread), so that a
C-CANCEL (PS3.7 9.3.2.3) stops the work between matches and a large answer never holds the
loop for long. A match deleted meanwhile is left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.events import Event
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from localdicom.catalog import Catalog, InstanceRecord, Record, SeriesRecord, StudyRecord
from localdicom.dicom.qido import STUDY_INSTANCES, STUDY_SERIES
from localdicom.dimse.node import Node, caller
from localdicom.dimse.query import (
    CANCEL,
    PATIENT_ID,
    PATIENT_NAME,
    PATIENT_ROOT,
    PENDING,
    STUDY_ROOT,
    UNABLE_TO_PROCESS,
    FindQuery,
    Refused,
    patient_counts,
    patient_key,
    response,
    translate,
)

logger = logging.getLogger(__name__)

MODEL_OF = {
    PatientRootQueryRetrieveInformationModelFind: PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelFind: STUDY_ROOT,
}
#: Matches answered per call on the loop.
BATCH = 32
PATIENT_IDENTITY = (PATIENT_ID, PATIENT_NAME)
STUDY_COUNTS = (STUDY_SERIES, STUDY_INSTANCES)

#: One match: a record, or at the PATIENT level the studies of one patient.
Match = list[Record]
Reply = tuple[int | Dataset, Dataset | None]


def handle_find(event: Event, node: Node) -> Iterator[Reply]:
    """Yield a pending response per match, or a failure; pynetdicom sends the final success."""
    who = caller(event)
    try:
        find = translate(_identifier(event), MODEL_OF[event.request.AffectedSOPClassUID])
    except Refused as refusal:
        logger.warning("C-FIND from %s refused (0x%04X): %s", who, refusal.status, refusal)
        yield refusal.response(), None
        return
    if find.unmatched:
        logger.info("C-FIND from %s: returned, not matched: %s", who, ", ".join(find.unmatched))
    matches = node.bridge.run(_matches(node.catalog, find))
    logger.info("C-FIND from %s at %s level: %d matches", who, find.level, len(matches))
    for sent, answer in enumerate(_answered(node, find, matches)):
        if event.is_cancelled:  # C-CANCEL-FIND-RQ (PS3.7 9.3.2.3)
            logger.info("C-FIND from %s cancelled after %d of %d", who, sent, len(matches))
            yield CANCEL, None
            return
        yield PENDING, response(find, answer, node.ae_title)


def _answered(node: Node, find: FindQuery, matches: list[Match]) -> Iterator[dict[str, Any]]:
    """The answer to each match, asked of the loop a batch at a time as they are sent."""
    for start in range(0, len(matches), BATCH):
        yield from node.bridge.run(_answers(node.catalog, find, matches[start : start + BATCH]))


def _identifier(event: Event) -> Dataset:
    """The request's Identifier, every element decoded (pydicom decodes lazily, so an
    undecodable one would otherwise fail later, mid-answer)."""
    try:
        identifier = event.identifier
        for element in identifier:
            _ = element.value
    except Exception as exc:  # whatever the bytes make pydicom raise: the peer's fault
        raise Refused(UNABLE_TO_PROCESS, f"the Identifier cannot be decoded: {exc}") from exc
    return identifier


async def _matches(catalog: Catalog, find: FindQuery) -> list[Match]:
    """The matching records in the index's order; at the PATIENT level, studies grouped by
    patient (PatientID and PatientName) in the order of each patient's first study."""
    records = catalog.search(find.query, None, None)
    if find.level != "PATIENT":
        return [[record] for record in records]
    patients: dict[tuple[str, str], Match] = {}
    for study in records:
        key = patient_key(catalog.attributes(study, PATIENT_IDENTITY))
        patients.setdefault(key, []).append(study)
    return list(patients.values())


async def _answers(catalog: Catalog, find: FindQuery, batch: list[Match]) -> list[dict[str, Any]]:
    """DICOM JSON of the keys asked for each match still in the index."""
    present = [match for match in batch if all(_present(catalog, r) for r in match)]
    results = [catalog.attributes(match[0], find.tags) for match in present]
    if find.level == "PATIENT":
        for match, result in zip(present, results, strict=True):
            result.update(patient_counts([catalog.attributes(s, STUDY_COUNTS) for s in match]))
    if find.needs_sidecars:
        results = await catalog.complete([match[0] for match in present], results)
    return results


def _present(catalog: Catalog, record: Record) -> bool:
    """Whether a record found earlier is still the index's (not deleted or replaced)."""
    if isinstance(record, StudyRecord):
        return catalog.study(record.uid) is record
    if isinstance(record, SeriesRecord):
        return catalog.series(record.study, record.uid) is record
    assert isinstance(record, InstanceRecord)
    return catalog.instance(record.study, record.series, record.sop) is record
