"""De-identification by the PS3.15 Annex E Basic Application Level Confidentiality Profile,
with options chosen by name (:class:`DeidOption`); pure: datasets and streams in, datasets and
streams out, no files named.

Each attribute gets the action of Table E.1-1 (:mod:`.confidentiality`), in the dataset and
in every sequence item: D a dummy value of its VR, Z empty, X removed, K kept, C cleaned, U a
replaced UID; a kept or dummied sequence has its items cleaned the same way (E.1.1). On top of
the table, so that the result stays usable:

- UIDs are replaced by a keyed, deterministic mapping (:class:`DeidKey`): the same UID gives
  the same new UID in every file and run with the same key, so references (Referenced SOP,
  Referenced Series, Source Image, Frame of Reference) still meet. Every UI value that is not
  a well-known UID (SOP classes, transfer syntaxes, coding schemes) is replaced, listed in
  the table or not.
- Patient ID and Patient's Name become a pseudonym derived from the key (or the one the key
  file's map holds for that patient), dates are shifted by a number of days per patient
  (Retain Longitudinal Temporal Information with Modified Dates Option, E.3.6).
- Private attributes are removed, except with the Retain Safe Private Option those of blocks
  the instance itself declares safe (Private Data Element Characteristics, PS3.3 C.12.1.1.7).
- Patient Identity Removed, De-identification Method (Code Sequence) and Longitudinal Temporal
  Information Modified are set (PS3.15 E.1.1, PS3.3 C.7.1.1).

Pixel data is never changed: :func:`burned_in` says which instances may show identifying text
in their pixels (Burned In Annotation YES, or a kind of instance that usually does).
"""

from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary

from localdicom.dicom.confidentiality import (
    OPTION_CODES,
    PROFILE_CODE,
    Actions,
    DeidOption,
)
from localdicom.dicom.pseudonyms import DeidKey, Pseudonym

#: Dummy values by VR for action D (a value that identifies no one and fits the VR).
_DUMMY: dict[str, Any] = {
    "AE": "ANONYMOUS",
    "AS": "000D",
    "CS": "ANONYMOUS",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "LO": "ANONYMOUS",
    "LT": "ANONYMOUS",
    "PN": "ANONYMOUS",
    "SH": "ANONYMOUS",
    "ST": "ANONYMOUS",
    "TM": "000000",
    "UC": "ANONYMOUS",
    "UR": "",
    "UT": "ANONYMOUS",
    "AT": 0,
}
_NUMBERS = {"FL", "FD", "SL", "SS", "UL", "US", "SV", "UV"}
#: UI attributes that name a kind of thing rather than an instance: kept unless listed.
_KIND_SUFFIXES = ("ClassUID", "SyntaxUID", "SchemeUID", "CreatorUID", "ResourceUID", "ContextUID")
_DICOM_ROOT = "1.2.840.10008."
PRIVATE_CHARACTERISTICS = 0x00080300
#: Text Value of an SR TEXT content item: the free text of the Content Sequence, whose D
#: (Table E.1-1) asks for dummy content; the table does not list it by itself.
TEXT_VALUE = 0x0040A160
#: Pixel Data, Float and Double Float Pixel Data: shared, never copied or changed.
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
#: Overlay groups (60xx): their data (60xx,3000) is X, the rest describes it (PS3.3 C.9.2).
_OVERLAY_GROUPS = range(0x6000, 0x6020, 2)
#: Secondary Capture (PS3.4 B.5), US, Encapsulated PDF: pixels or documents made of text.
_TEXT_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7": "a Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.1": "a Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "a Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "a Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.4": "a Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.6.1": "an ultrasound image",
    "1.2.840.10008.5.1.4.1.1.3.1": "an ultrasound image",
    "1.2.840.10008.5.1.4.1.1.104.1": "an encapsulated PDF",
}
_TEXT_MODALITIES = {"US": "ultrasound", "SC": "secondary capture", "XA": "X-ray angiography",
                    "ES": "endoscopy", "OT": "other", "DOC": "document"}  # fmt: skip


class DeidentifyError(ValueError):
    """An instance that cannot be de-identified (unreadable); the message says why."""


@dataclass(frozen=True)
class Outcome:
    """A de-identified instance: the new dataset, the patient's pseudonym (to record in the
    key file's map), and why its pixels need a look before sharing ("" when no reason is
    known)."""

    dataset: Dataset
    patient: Pseudonym
    review: str = ""


def burned_in(ds: Dataset) -> str:
    """Why the pixel data of ``ds`` may show identifying text, or "" (PS3.15 E.3.1: the
    Basic Profile leaves pixels alone; Burned In Annotation, PS3.3 C.7.6.1.1.3)."""
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        return "Burned In Annotation is YES"
    kind = _TEXT_CLASSES.get(str(ds.get("SOPClassUID", "")))
    if kind:
        return f"{kind}, which often has text in its pixels"
    modality = str(ds.get("Modality", "")).upper()
    if modality in _TEXT_MODALITIES:
        return f"modality {modality} ({_TEXT_MODALITIES[modality]}) often has text in its pixels"
    return ""


class Deidentifier:
    """The Basic Profile with ``options``, keyed by ``key``."""

    def __init__(self, key: DeidKey, options: Iterable[DeidOption | str] = ()) -> None:
        self.key = key
        self.options = frozenset(DeidOption(option) for option in options)
        self.actions = Actions(self.options)

    def deidentify(self, ds: Dataset) -> Outcome:
        """A de-identified copy of ``ds`` (``ds`` itself is not changed)."""
        original = ds
        ds = _copy(ds)
        patient = self.key.patient(
            str(original.get("PatientID", "")), str(original.get("PatientName", ""))
        )
        walk = _Walk(self, patient, _identifiers(original))
        walk.dataset(ds)
        ds.PatientID = patient.pseudonym
        ds.PatientName = patient.pseudonym
        self._mark(ds)
        if getattr(ds, "file_meta", None) is not None:
            _follow_meta(ds)
        return Outcome(ds, patient, burned_in(original))

    def _mark(self, ds: Dataset) -> None:
        """Say what was done (PS3.3 C.7.1.1 Patient Identification, De-identification)."""
        ds.PatientIdentityRemoved = "YES"
        chosen = [option for option in DeidOption if option in self.options]
        codes = [PROFILE_CODE] + [OPTION_CODES[option] for option in chosen]
        ds.DeidentificationMethod = [meaning[:64] for _, meaning in codes]
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = items
        shifted = DeidOption.RETAIN_MODIFIED_DATES in self.options
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if shifted else "REMOVED"


def deidentify_part10(source: BinaryIO, target: BinaryIO, deidentifier: Deidentifier) -> Outcome:
    """Read a Part 10 instance from ``source``, write its de-identified version to
    ``target`` in the same transfer syntax (pixel data byte for byte)."""
    try:
        ds = pydicom.dcmread(source)
        outcome = deidentifier.deidentify(ds)
        pydicom.dcmwrite(target, outcome.dataset, enforce_file_format=True)
    except (InvalidDicomError, ValueError, KeyError, TypeError, AttributeError, EOFError) as exc:
        raise DeidentifyError(f"cannot be de-identified: {exc}") from None
    return outcome


def _copy(ds: Dataset) -> Dataset:
    """A deep copy of ``ds`` that shares its pixel data (bytes, never changed) rather than
    copying it."""
    pixels = {tag: ds[tag] for tag in _PIXEL_TAGS if tag in ds}
    for tag in pixels:
        del ds[tag]
    try:
        copied = copy.deepcopy(ds)
    finally:
        ds.update(pixels)
    copied.update(pixels)
    return copied


def _follow_meta(ds: Dataset) -> None:
    """The file meta follows the new SOP Instance UID; the AE titles that sent it go
    (PS3.10 7.1: Source/Sending/Receiving AE Title are optional)."""
    meta = ds.file_meta
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                    "ReceivingApplicationEntityTitle", "PrivateInformation",
                    "PrivateInformationCreatorUID"):  # fmt: skip
        if keyword in meta:
            delattr(meta, keyword)


def _identifiers(ds: Dataset) -> re.Pattern[str] | None:
    """The names and IDs of the instance, to take out of the free text that Clean keeps."""
    words: set[str] = set()
    for keyword in ("PatientID", "OtherPatientIDs", "AccessionNumber", "PatientBirthDate"):
        value = ds.get(keyword)
        words.update(str(part) for part in (value if _is_multi(value) else [value]) if part)
    for keyword in ("PatientName", "OtherPatientNames", "PatientMotherBirthName"):
        value = ds.get(keyword)
        for name in value if _is_multi(value) else [value]:
            words.update(part for part in re.split(r"[\^=\s,]+", str(name or "")) if len(part) > 1)
    if not words:
        return None
    alternatives = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _is_multi(value: object) -> bool:
    return isinstance(value, list | tuple | pydicom.multival.MultiValue)


class _Walk:
    """One pass over a dataset and its sequences, applying each attribute's action."""

    def __init__(self, deid: Deidentifier, patient: Pseudonym, words: re.Pattern | None) -> None:
        self.key = deid.key
        self.actions = deid.actions
        self.shift = patient.shift_days
        self.shifting = DeidOption.RETAIN_MODIFIED_DATES in deid.options
        self.safe_private = DeidOption.RETAIN_SAFE_PRIVATE in deid.options
        self.words = words

    def dataset(self, ds: Dataset) -> None:
        safe = _safe_blocks(ds) if self.safe_private else {}
        for tag in list(ds.keys()):
            element = ds[tag]
            if element.tag.is_private:
                self._private(ds, element, safe)
            elif element.tag.group in _OVERLAY_GROUPS:
                del ds[tag]
            else:
                self._standard(ds, element)
        if not self.safe_private and PRIVATE_CHARACTERISTICS in ds:
            del ds[PRIVATE_CHARACTERISTICS]  # it describes private blocks that are gone
        _drop_orphan_creators(ds)

    def _standard(self, ds: Dataset, element: DataElement) -> None:
        action = self.actions.get(int(element.tag))
        if action is None and element.tag == TEXT_VALUE:
            action = "D"
        if action is None:
            action = "U" if self._is_instance_uid(element) else "K"
            if action == "K" and self.shifting and element.VR in ("DA", "DT"):
                action = "C"  # every kept date moves with the listed ones
        if action == "X":
            del ds[element.tag]
        elif element.VR == "SQ":
            self._sequence(element, action)
        elif action == "Z":
            element.value = _empty(element.VR)
        elif action == "D":
            element.value = self._dummy(element)
        elif action in ("U", "U*") and element.VR == "UI":
            self._uids(element)
        elif action in ("U", "U*"):
            element.value = _empty(element.VR)
        elif action == "C":
            self._clean(element)

    def _sequence(self, element: DataElement, action: str) -> None:
        if action == "Z":
            element.value = Sequence([])
            return
        for item in element.value or []:  # D, K, C, U*: the items are cleaned (E.1.1)
            self.dataset(item)

    def _private(self, ds: Dataset, element: DataElement, safe: dict[int, set[int]]) -> None:
        tag = element.tag
        if 0x10 <= tag.element <= 0xFF:  # a Private Creator: kept while its block has elements
            return
        if (tag.element & 0xFF) in safe.get(tag.group << 8 | tag.element >> 8, set()):
            if element.VR == "SQ":
                for item in element.value or []:
                    self.dataset(item)
            elif element.VR == "UI":
                self._uids(element)
            return
        del ds[tag]

    def _is_instance_uid(self, element: DataElement) -> bool:
        if element.VR != "UI" or not element.value:
            return False
        keyword = keyword_for_tag(element.tag) or ""
        return not keyword.endswith(_KIND_SUFFIXES)

    def _uids(self, element: DataElement) -> None:
        values = element.value if _is_multi(element.value) else [element.value]
        new = [self.key.uid(str(v)) if v and not _well_known(str(v)) else v for v in values]
        element.value = new if _is_multi(element.value) else new[0]

    def _dummy(self, element: DataElement) -> Any:
        if element.VR == "UI":
            self._uids(element)
            return element.value
        if self.shifting and element.VR in ("DA", "DT") and element.value:
            return _shifted(element, self.shift)
        if element.VR in _NUMBERS:
            return 0
        return _DUMMY.get(element.VR, b"\0\0")

    def _clean(self, element: DataElement) -> None:
        """C: dates shifted (E.3.6), times kept; free text without the instance's names and
        IDs (E.3.5, best effort); anything else kept as the option says it is safe to."""
        if element.VR in ("DA", "DT"):
            element.value = _shifted(element, self.shift) if self.shifting else _empty("DA")
        elif element.VR in ("LO", "LT", "SH", "ST", "UT", "UC") and self.words is not None:
            values = element.value if _is_multi(element.value) else [element.value]
            cleaned = [self.words.sub("", str(v)) if v else v for v in values]
            element.value = cleaned if _is_multi(element.value) else cleaned[0]


def _empty(vr: str) -> Any:
    return None if vr in _NUMBERS or vr.startswith("O") or vr in ("UN", "AT") else ""


def _well_known(uid: str) -> bool:
    return uid.startswith(_DICOM_ROOT) or uid in UID_dictionary


def _shifted(element: DataElement, days: int) -> Any:
    """Each date of a DA or DT value moved by ``days``; one that cannot be read is emptied
    rather than kept."""
    values = element.value if _is_multi(element.value) else [element.value]
    moved = [_shift_one(str(value), days) for value in values]
    return moved if _is_multi(element.value) else moved[0]


def _shift_one(value: str, days: int) -> str:
    value = value.strip()
    if not value:
        return value
    head, tail = value[:8], value[8:]
    try:
        date = datetime.datetime.strptime(head, "%Y%m%d").date()
        return (date + datetime.timedelta(days=days)).strftime("%Y%m%d") + tail
    except ValueError:
        return ""


def _safe_blocks(ds: Dataset) -> dict[int, set[int]]:
    """The private elements ``ds`` declares safe, by block (group << 8 | block number) ->
    element offsets (PS3.3 C.12.1.1.7: Block Identifying Information Status SAFE, or MIXED
    with its Nonidentifying Private Elements)."""
    safe: dict[int, set[int]] = {}
    for item in ds.get("PrivateDataElementCharacteristicsSequence", []):
        group, creator = item.get("PrivateGroupReference"), item.get("PrivateCreatorReference")
        status = str(item.get("BlockIdentifyingInformationStatus", "")).upper()
        block = _block_of(ds, group, creator) if group is not None else None
        if block is None:
            continue
        if status == "SAFE":
            safe[block] = set(range(256))
        elif status == "MIXED":
            offsets = item.get("NonidentifyingPrivateElements") or []
            safe[block] = {int(o) for o in (offsets if _is_multi(offsets) else [offsets])}
    return safe


def _block_of(ds: Dataset, group: int, creator: object) -> int | None:
    for number in range(0x10, 0x100):
        element = ds.get((group << 16) | number)
        if element is not None and str(element.value).strip() == str(creator).strip():
            return group << 8 | number
    return None


def _drop_orphan_creators(ds: Dataset) -> None:
    """Remove the Private Creators whose block lost all its elements (PS3.5 7.8.1)."""
    used = {tag.group << 8 | tag.element >> 8 for tag in list(ds.keys()) if tag.is_private}
    for tag in list(ds.keys()):
        if (
            tag.is_private
            and 0x10 <= tag.element <= 0xFF
            and (tag.group << 8 | tag.element) not in used
        ):
            del ds[tag]
