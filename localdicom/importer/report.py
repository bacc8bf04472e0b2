"""What an import tells the person who ran it: progress while it works, and a summary at
the end that counts every file examined exactly once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from localdicom.catalog import Decision

#: Conflicts and errors listed without --verbose.
SHOWN_FAILURES = 20


class Progress(Protocol):
    """What the importer reports while it works (the CLI draws a bar from it)."""

    def add_total(self, files: int) -> None: ...

    def advance(self, files: int, size: int) -> None: ...


class NoProgress:
    def add_total(self, files: int) -> None:
        pass

    def advance(self, files: int, size: int) -> None:
        pass


@dataclass
class ImportReport:
    """What an import did, in the numbers the summary prints.

    Every file examined is counted exactly once: ``files`` = stored + duplicates +
    conflicts + not DICOM + errors + DICOMDIRs + zips + refused.
    """

    archive: Path
    server: str | None = None
    stored: int = 0
    duplicates: int = 0
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    not_dicom: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    dicomdirs: int = 0
    zips: int = 0
    #: --deidentify: instances whose pixels may show identifying text, stored (review) or
    #: not (refused, --reject-burned-in).
    review: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    size: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> int:
        return (
            self.stored
            + self.duplicates
            + len(self.conflicts)
            + len(self.not_dicom)
            + len(self.errors)
            + self.dicomdirs
            + self.zips
            + len(self.refused)
        )

    @property
    def exit_code(self) -> int:
        """0 all went well, 1 conflicts or errors, 130 interrupted (as a shell reports ^C)."""
        if self.interrupted:
            return 130
        return 1 if self.conflicts or self.errors else 0

    def lines(self, *, verbose: bool = False) -> list[str]:
        """The summary a person reads at the end of the import."""
        how = f"through the server at {self.server}" if self.server else "directly"
        seconds = max(self.seconds, 1e-9)
        lines = [
            f"{'Interrupted' if self.interrupted else 'Imported'} into {self.archive} {how} "
            f"in {self.seconds:.2f} s: {self.files} files, {self.size / 1e6:.1f} MB, "
            f"{self.files / seconds:.0f} files/s, {self.size / 1e6 / seconds:.1f} MB/s"
        ]
        rows = [
            ("stored", self.stored),
            ("already present", self.duplicates),
            ("conflicts", len(self.conflicts)),
            ("not DICOM", len(self.not_dicom)),
            ("errors", len(self.errors)),
            ("DICOMDIR read", self.dicomdirs),
            ("zip files opened", self.zips),
        ]
        if self.review or self.refused:
            rows += [("need review", len(self.review)), ("refused", len(self.refused))]
        width = max(len(str(count)) for _, count in rows)
        lines += [f"  {name:<17}{count:>{width}}" for name, count in rows]
        lines += _listed("conflict", self.conflicts, verbose)
        lines += _listed("error", self.errors, verbose)
        lines += review_lines("import", self.review, self.refused, verbose)
        if verbose:
            lines += [f"not DICOM: {path}: {reason}" for path, reason in self.not_dicom]
        elif self.not_dicom:
            lines.append(f"{len(self.not_dicom)} files are not DICOM; --verbose lists them.")
        lines += self.notes
        if self.interrupted:
            lines.append("Run the same command again to import the rest.")
        return lines


def review_lines(
    command: str, review: list[tuple[str, str]], refused: list[tuple[str, str]], verbose: bool
) -> list[str]:
    """--deidentify: the instances whose pixels may show identifying text, kept (review) or
    left out (refused, --reject-burned-in); ``import`` and ``export`` say it alike."""
    lines = _listed("needs review", review, verbose) + _listed("refused", refused, verbose)
    if review:
        lines.append(
            "De-identified, but their pixels may show names or IDs: look at them before "
            f"sharing (or {command} with --reject-burned-in)."
        )
    return lines


def _listed(what: str, items: list[tuple[str, str]], verbose: bool) -> list[str]:
    shown = items if verbose else items[:SHOWN_FAILURES]
    lines = [f"{what}: {path}: {reason}" for path, reason in shown]
    if len(items) > len(shown):
        lines.append(f"... and {len(items) - len(shown)} more {what}s; --verbose lists them all.")
    return lines


def count(report: ImportReport, decision: Decision, source: object, reason: str = "") -> None:
    """Count an instance that reached the archive's duplicate policy (:func:`decide`)."""
    if decision.writes:
        report.stored += 1
    elif decision is Decision.ALREADY_PRESENT:
        report.duplicates += 1
    else:
        report.conflicts.append((str(source), reason))
