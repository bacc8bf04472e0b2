"""``push --deidentify``: each instance de-identified (PS3.15 Annex E, :mod:`localdicom.deid`)
just before it is sent, by export's own rules and workers (:class:`Deidentifying`,
:func:`deidentified`), so the same key gives the remote the UIDs ``export --deidentify``
writes.

The record of such a push is its own (:func:`record_address`): it holds, as for a plain push,
the original SOP Instance UID and the stored digest, so a re-run sends nothing that was
sent; and a plain push to the same remote, or one with another key or other options, is not
mistaken for it. What the remote answers names the new UIDs; the summary shows both.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from localdicom.archive import StoredInstance
from localdicom.export import Deidentifying, deidentified
from localdicom.importer.report import review_lines
from localdicom.workers import Workers

Local = tuple[Path, StoredInstance]


class PushDeid:
    """--deidentify during one push."""

    def __init__(self, deidentifying: Deidentifying) -> None:
        self.deid = deidentifying

    def record_address(self, address: str) -> str:
        """The name of this push's record: the remote, and what makes the UIDs it receives
        (a UID derived from the key, never the secret; the options)."""
        deidentifier = self.deid.deidentifier
        made = deidentifier.key.uid("2.25.0") + "|" + ",".join(sorted(self.deid.choice.options))
        return f"{address}#deidentified-{hashlib.sha256(made.encode()).hexdigest()[:16]}"

    def kept(
        self, instances: list[tuple[Path, StoredInstance]]
    ) -> list[tuple[Path, StoredInstance]]:
        """The instances that may be sent: --reject-burned-in leaves some out; those kept
        that may show text in their pixels are listed for review."""
        return [(dcm, stored) for dcm, stored in instances if self.deid.member(dcm, stored)]

    def sop(self, stored: StoredInstance) -> str:
        """The SOP Instance UID the remote receives."""
        return self.deid.deidentifier.key.uid(stored.header.sop_uid)

    def label(self, stored: StoredInstance) -> str:
        header = stored.header
        return (
            f"studies/{header.study_uid}/series/{header.series_uid}/instances/{header.sop_uid}"
            f" (sent as {self.sop(stored)})"
        )

    async def rewrite(self, pool: Workers, dcm: Path) -> bytes:
        """The instance de-identified, in a worker process."""
        made = await pool.run(deidentified, dcm, self.deid.deidentifier, None)
        self.deid.patients[made.patient.pseudonym] = made.patient
        return made.data

    def rewrite_here(self, dcm: Path, target: str | None) -> bytes:
        """The instance de-identified (and converted to ``target``), in this process: for
        C-STORE, one instance after another on one association."""
        made = deidentified(dcm, self.deid.deidentifier, target)
        self.deid.patients[made.patient.pseudonym] = made.patient
        return made.data

    def finish(self) -> list[str]:
        """The notes for the summary; the patients met recorded in the key file's map."""
        self.deid.record()
        lines = review_lines("push", self.deid.review, self.deid.refused, verbose=True)
        return lines + self.deid.notes
