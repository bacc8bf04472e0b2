"""What ``--deidentify``, ``--deid-key``, ``--deid-option`` and ``--reject-burned-in`` ask
for, checked once for every command that offers them (``import``, ``export``): the key must
be given, and live outside what is written or shared (whoever has it can undo the
pseudonyms)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from localdicom.deid.keyfile import KeyFileError, load_key, record_patients
from localdicom.dicom.pseudonyms import Pseudonym

if TYPE_CHECKING:
    from localdicom.dicom.deidentify import Deidentifier


@dataclass(frozen=True)
class Deidentify:
    """--deidentify: the key file (created when absent), the option names, and whether an
    instance whose pixels may show identifying text is refused rather than listed."""

    key: Path
    options: tuple[str, ...] = ()
    reject_burned_in: bool = False

    @classmethod
    def chosen(
        cls, deidentify: bool, key: Path | None, names: tuple[str, ...], reject_burned_in: bool
    ) -> Deidentify | None:
        """The command line's choice, or None without --deidentify; a usage error when the
        options do not go together."""
        if not deidentify:
            if key or names or reject_burned_in:
                raise click.UsageError(
                    "--deid-key, --deid-option and --reject-burned-in need --deidentify"
                )
            return None
        if key is None:
            raise click.UsageError(
                "--deidentify needs --deid-key FILE (created when absent; keep it outside "
                "the archive)"
            )
        return cls(key, names, reject_burned_in)

    def open(self, outside: Iterable[tuple[str, Path]]) -> Deidentifier:
        """The deidentifier of the key file, created when absent; refused (KeyFileError)
        when the key lies inside one of the ``outside`` places, given as (what, path)."""
        from localdicom.dicom.deidentify import Deidentifier  # pydicom: only when it is used

        where = self.key.resolve()
        for what, path in outside:
            if where.is_relative_to(path.resolve()):
                raise KeyFileError(
                    f"--deid-key {self.key} is inside {what}: keep the key outside what is "
                    "shared (whoever has it can undo the pseudonyms)"
                )
        return Deidentifier(load_key(self.key), self.options)

    def record(self, patients: Iterable[Pseudonym]) -> str:
        """Add the patients met to the key file's map; what went wrong, or "" (the
        pseudonyms derive from the secret, so a map not written loses only the record)."""
        patients = list(patients)
        if not patients:
            return ""
        try:
            record_patients(self.key, patients)
        except KeyFileError as exc:
            return f"the pseudonym map was not updated: {exc}"
        return ""
