"""UID rules (PS3.5 section 9.1).

A UID from a client becomes a folder or file name in the archive, so the check here is the
guard between the network and the file system: only digits and dots, at most 64 characters,
no empty component and no leading zero in a multi-digit component.
"""

from __future__ import annotations

import re

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"

#: Transfer syntaxes whose Pixel Data is not encapsulated (PS3.5 A.1-A.5).
NATIVE_TRANSFER_SYNTAXES = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    }
)


class InvalidUID(ValueError):
    """A value that is not a valid DICOM UID."""


def is_valid_uid(value: str) -> bool:
    """True when ``value`` follows PS3.5 9.1: digits and dots, 1 to 64 characters."""
    return 0 < len(value) <= 64 and _UID.fullmatch(value) is not None


def check_uid(value: str, what: str = "UID") -> str:
    """Return ``value`` unchanged if it is a valid UID, else raise :class:`InvalidUID`.

    The message names the offending value (shortened) so that a client can correct it.
    """
    if not is_valid_uid(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InvalidUID(
            f"{what} {shown!r} is not a valid DICOM UID "
            "(digits and dots, at most 64 characters, no leading zeros; PS3.5 9.1)"
        )
    return value
