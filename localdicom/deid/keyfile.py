"""The de-identification key file (``--deid-key FILE``): the secret that keys every UID,
pseudonym and date shift, and the map from each original patient to its pseudonym, so that
authorised people can re-identify and so that a pseudonym edited in the map is used from then
on. It must live outside the archive and anything shared: whoever holds it can undo the
pseudonyms.

JSON, created when absent with a fresh 256-bit secret; readable and writable by its owner
only (0600); every write is atomic (a new file renamed over the old one) and re-reads the file
first, adding to what another run wrote before. Two runs writing at the very same moment may
each miss the other's new entries: nothing is lost but that record, since every pseudonym and
shift derives from the secret and is recorded again the next time that patient is met.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from localdicom.dicom.pseudonyms import DeidKey, Pseudonym

FORMAT = 1


class KeyFileError(Exception):
    """The key file cannot be read, created or written; the message says what to do."""


def load_key(path: Path) -> DeidKey:
    """The key in ``path``, created (with a new secret and an empty map) when absent."""
    if not path.exists():
        key = DeidKey(secrets.token_bytes(32), {})
        _write(path, key)
        return key
    return _read(path)


def record_patients(path: Path, patients: Iterable[Pseudonym]) -> int:
    """Add the patients not yet in the map of the key file at ``path``; how many were new."""
    key = _read(path)
    known = dict(key.patients)
    fresh = {_identity(p): p for p in patients if _identity(p) not in known}
    if fresh:
        _write(path, DeidKey(key.secret, known | fresh))
    return len(fresh)


def _identity(patient: Pseudonym) -> str:
    return patient.patient_id or f"name:{patient.patient_name}"


def _read(path: Path) -> DeidKey:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, not {FORMAT}")
        patients = {
            identity: Pseudonym(
                entry["pseudonym"],
                int(entry["shift_days"]),
                entry.get("patient_id", ""),
                entry.get("patient_name", ""),
            )
            for identity, entry in data["patients"].items()
        }
        return DeidKey(bytes.fromhex(data["secret"]), patients)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot be read ({exc.strerror})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyFileError(
            f"{path} is not a localdicom de-identification key ({exc}); name another file "
            "(it is created when absent)"
        ) from None


def _write(path: Path, key: DeidKey) -> None:
    data = {
        "format": FORMAT,
        "about": "localdicom de-identification key: keep it private, away from the data",
        "secret": key.secret.hex(),
        "patients": {
            identity: {
                "pseudonym": p.pseudonym,
                "shift_days": p.shift_days,
                "patient_id": p.patient_id,
                "patient_name": p.patient_name,
            }
            for identity, p in sorted(key.patients.items())
        },
    }
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise KeyFileError(f"{path}: cannot be written ({exc.strerror})") from None
