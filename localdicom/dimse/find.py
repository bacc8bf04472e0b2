"""C-FIND SCP, Patient Root and Study Root (PS3.4 C.4.1): answered from the in-memory index,
as QIDO-RS is, so what any way in stored is found at once.

The search runs once; its matches are answered in small batches (for keys memory does not
hold, the sidecars of a batch are read in a thread), each response sent as it is ready, so
that a C-CANCEL (PS3.7 9.3.2.3) stops the work between matches and a large answer never holds
the loop for long. A match deleted meanwhile is left out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from localdicom.catalog import Catalog, InstanceRecord, Record, SeriesRecord, StudyRecord
from localdicom.dicom.qido import STUDY_INSTANCES, STUDY_SERIES
from localdicom.dimse.messages import SUCCESS, BadMessage, Message
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

if TYPE_CHECKING:
    from localdicom.dimse.association import Association

logger = logging.getLogger(__name__)

MODEL_OF = {
    PatientRootQueryRetrieveInformationModelFind: PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelFind: STUDY_ROOT,
}
#: PS3.7 C.5.x: Refused, SOP Class not supported.
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: Matches answered per call on the loop.
BATCH = 32
PATIENT_IDENTITY = (PATIENT_ID, PATIENT_NAME)
STUDY_COUNTS = (STUDY_SERIES, STUDY_INSTANCES)

#: One match: a record, or at the PATIENT level the studies of one patient.
Match = list[Record]


async def handle_find(association: Association, request: Message) -> None:
    """A pending response per match, then the final one: success, cancelled or a failure."""
    who = association.caller
    try:
        find = translate(_identifier(request), _model(request))
    except Refused as refusal:
        logger.warning("C-FIND from %s refused (0x%04X): %s", who, refusal.status, refusal)
        await association.respond(request, refusal.status, details=refusal.response())
        return
    if find.unmatched:
        logger.info("C-FIND from %s: returned, not matched: %s", who, ", ".join(find.unmatched))
    catalog, ae_title = association.node.catalog, association.node.ae_title
    matches = _matches(catalog, find)
    logger.info("C-FIND from %s at %s level: %d matches", who, find.level, len(matches))
    sent = 0
    for start in range(0, len(matches), BATCH):
        await asyncio.sleep(0)  # a C-CANCEL read meanwhile is seen before the next batch
        for answer in await _answers(catalog, find, matches[start : start + BATCH]):
            if request.message_id in association.cancelled:  # C-CANCEL-FIND-RQ, PS3.7 9.3.2.3
                logger.info("C-FIND from %s cancelled after %d of %d", who, sent, len(matches))
                await association.respond(request, CANCEL)
                return
            await association.respond(request, PENDING, identifier=response(find, answer, ae_title))
            sent += 1
    await association.respond(request, SUCCESS)


def _model(request: Message) -> str:
    model = MODEL_OF.get(request.context.abstract_syntax)
    if model is None:  # a C-FIND on a storage or retrieve context
        raise Refused(SOP_CLASS_NOT_SUPPORTED, f"no C-FIND in {request.context.abstract_syntax}")
    return model


def _identifier(request: Message) -> Dataset:
    try:
        return request.identifier()
    except BadMessage as error:
        raise Refused(UNABLE_TO_PROCESS, str(error)) from error


def _matches(catalog: Catalog, find: FindQuery) -> list[Match]:
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
