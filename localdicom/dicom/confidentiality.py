"""PS3.15 Annex E Table E.1-1: which action the Basic Application Level Confidentiality
Profile, with the options chosen, takes on each attribute.

Where the table comes from (evaluated in 2026; default install GPL-free):

- dicom-anonymizer (KitwareMedical, BSD-3-Clause): ships the Basic Profile column of Table
  E.1-1 as Python data, one module per edition of the standard (``dicomfields_2026c``),
  grouped by action (D, Z, X, U, Z/D, X/Z, X/D, X/Z/D, X/Z/U*) with masks for the repeating
  groups (50xx curves, 60xx overlays). The current edition, maintained: used here, as data
  only; its own anonymizer (no options, random UIDs) is not.
- innolitics dicom-standard (MIT): the whole table with the option columns, as JSON, but
  last extracted from the 2020 edition: the option columns come from it
  (:mod:`.confidentiality_options`).
- dicognito (MIT): a good anonymizer with consistent fake values, but driven by its own VR
  and keyword rules, not by Table E.1-1, and without the options by name.
- deid (pydicom/deid, MIT): a recipe engine; its bundled recipes are pixel filters and
  example header rules, not Table E.1-1.
- idiscore: implements the options, but is GPL-3.0: not in the default install.
- pydicom: has no Annex E tables.
"""

from __future__ import annotations

from collections.abc import Iterable

from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as basic

from localdicom.dicom import confidentiality_options as columns
from localdicom.dicom.confidentiality_options import DeidOption

#: The edition of the standard the Basic Profile column is taken from.
EDITION = "2026c"


#: CID 7050 "De-identification Method" codes (PS3.16), scheme DCM.
PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES: dict[DeidOption, tuple[str, str]] = {
    DeidOption.RETAIN_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    DeidOption.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    DeidOption.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    DeidOption.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    DeidOption.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
}

_OPTION_COLUMNS: dict[DeidOption, dict[int, str]] = {
    DeidOption.RETAIN_MODIFIED_DATES: columns.MODIFIED_DATES,
    DeidOption.RETAIN_PATIENT_CHARACTERISTICS: columns.PATIENT_CHARACTERISTICS,
    DeidOption.RETAIN_DEVICE_IDENTITY: columns.DEVICE_IDENTITY,
    DeidOption.CLEAN_DESCRIPTORS: columns.DESCRIPTORS,
}

#: The Basic Profile's groups, by the action code of Table E.1-1.
_GROUPS = {
    "D": basic.D_TAGS,
    "Z": basic.Z_TAGS,
    "X": basic.X_TAGS,
    "U": basic.U_TAGS,
    "Z/D": basic.Z_D_TAGS,
    "X/Z": basic.X_Z_TAGS,
    "X/D": basic.X_D_TAGS,
    "X/Z/D": basic.X_Z_D_TAGS,
    "X/Z/U*": basic.X_Z_U_STAR_TAGS,
}

#: A combined code resolved without the IOD's module tables, always to the choice that
#: keeps a Type 1 or 2 attribute present (E.1.1: X/Z is "X unless Z is required to maintain
#: IOD conformance", and so on): Z rather than X, D rather than Z or X. U* (X/Z/U*): the
#: sequence is kept, the UIDs in it replaced.
_RESOLVED = {"Z/D": "D", "X/Z": "Z", "X/D": "D", "X/Z/D": "D", "X/Z/U*": "U*"}


def basic_profile() -> tuple[dict[int, str], list[tuple[int, int, int, int, str]]]:
    """The Basic Profile column: tag -> action code as printed in Table E.1-1, and the
    repeating-group rows as (group, element, group mask, element mask, code)."""
    exact: dict[int, str] = {}
    masked = []
    for code, tags in _GROUPS.items():
        for entry in tags:
            if len(entry) == 2:
                exact[entry[0] << 16 | entry[1]] = code
            else:
                group, element, group_mask, element_mask = entry
                masked.append((group, element, group_mask, element_mask, code))
    return exact, masked


class Actions:
    """The single action (D, Z, X, K, C, U, U*) for each listed tag, with the options'
    columns laid over the Basic Profile's (E.3: an option's action replaces the profile's)."""

    def __init__(self, options: Iterable[DeidOption]) -> None:
        exact, self._masked = basic_profile()
        self._exact = {tag: _RESOLVED.get(code, code) for tag, code in exact.items()}
        for option in options:
            self._exact.update(_OPTION_COLUMNS.get(option, {}))

    def get(self, tag: int) -> str | None:
        """The action for ``tag``, or None when Table E.1-1 does not list it."""
        found = self._exact.get(tag)
        if found is not None:
            return found
        group, element = tag >> 16, tag & 0xFFFF
        for want_group, want_element, group_mask, element_mask, code in self._masked:
            if group & group_mask == want_group and element & element_mask == want_element:
                return _RESOLVED.get(code, code)
        return None
