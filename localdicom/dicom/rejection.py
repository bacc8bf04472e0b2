"""The reasons for which an object may be rejected, as the reject route names them.

The route is dcm4chee's (``.../reject/{CodeValue}^{CodingSchemeDesignator}``), which OHIF
calls with ``supportsReject``; its codes are those of a Key Object Selection document that
rejects instances (PS3.3 C.17.6, IHE Imaging Object Change Management): PS3.16 CID 7011
"Rejected for Quality Reasons", "Rejected for Patient Safety Reasons", "Incorrect Modality
Worklist Entry" and "Data Retention Policy Expired".
"""

from __future__ import annotations

#: (CodeValue, CodingSchemeDesignator) -> CodeMeaning: PS3.16 CID 7011 Rejection Reasons.
REJECTION_REASONS: dict[tuple[str, str], str] = {
    ("113001", "DCM"): "Rejected for Quality Reasons",
    ("113037", "DCM"): "Rejected for Patient Safety Reasons",
    ("113038", "DCM"): "Incorrect Modality Worklist Entry",
    ("113039", "DCM"): "Data Retention Policy Expired",
}


class UnknownRejection(ValueError):
    """A code that is not a rejection reason of CID 7011."""


def rejection_code(text: str) -> dict[str, str]:
    """``113001^DCM`` as a code (value, designator, meaning); raises :class:`UnknownRejection`."""
    value, caret, designator = text.partition("^")
    meaning = REJECTION_REASONS.get((value.strip(), designator.strip()))
    if not caret or meaning is None:
        known = ", ".join(f"{v}^{d} ({m})" for (v, d), m in REJECTION_REASONS.items())
        raise UnknownRejection(
            f"{text[:80]!r} is not a rejection reason of PS3.16 CID 7011; use one of {known}"
        )
    return {"value": value.strip(), "designator": designator.strip(), "meaning": meaning}
