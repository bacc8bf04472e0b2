"""The keyed replacements of de-identification (PS3.15 Annex E) that need no dataset: a
patient's pseudonym and date shift, and a UID's replacement, each derived from the key's
secret by HMAC, so that every run and every worker process with the same key agrees.

Apart from :mod:`.deidentify` (which imports pydicom) so that the key file can be read and
written by commands that never open a dataset.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pseudonym:
    """What stands for one patient: the pseudonym (Patient ID and Name) and the date shift."""

    pseudonym: str
    shift_days: int
    #: The originals, kept in the key file's map so that authorised people can re-identify.
    patient_id: str = ""
    patient_name: str = ""


@dataclass(frozen=True)
class DeidKey:
    """The secret that keys every replacement, and the pseudonyms already given (by original
    Patient ID): the same key gives the same UIDs, pseudonyms and shifts everywhere."""

    secret: bytes
    patients: Mapping[str, Pseudonym] = field(default_factory=dict)

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self.secret, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, uid: str) -> str:
        """The new UID for ``uid``: 2.25 and a UUID (PS3.5 B.2) made of its HMAC, with the
        version bits of a custom UUID (RFC 9562 version 8)."""
        number = int.from_bytes(self._digest("uid", uid)[:16], "big")
        number &= ~(0xF000 << 64) & ~(0xC000 << 48)
        number |= 0x8000 << 64 | 0x8000 << 48
        return f"2.25.{number}"

    def patient(self, patient_id: str, patient_name: str) -> Pseudonym:
        """The pseudonym of a patient: the map's if it has one, else derived from the key."""
        identity = patient_id or f"name:{patient_name}"
        known = self.patients.get(identity)
        if known is not None:
            return known
        digest = self._digest("patient", identity)
        pseudonym = "ANON" + digest[:6].hex().upper()
        shift = -(365 + int.from_bytes(digest[6:10], "big") % 3650)  # 1 to 11 years back
        return Pseudonym(pseudonym, shift, patient_id, patient_name)
