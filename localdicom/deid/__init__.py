"""De-identification as the commands use it: the pure rules (:mod:`localdicom.dicom.deidentify`)
with the key file that keeps the secret and the pseudonym map outside the archive
(:mod:`.keyfile`). ``import``, ``export`` and ``push`` each need one line::

    deidentifier = Deidentifier(load_key(path), options)
    outcome = deidentify_part10(source, target, deidentifier)
"""

from localdicom.deid.keyfile import KeyFileError, load_key, record_patients
from localdicom.dicom.confidentiality import DeidOption
from localdicom.dicom.deidentify import (
    Deidentifier,
    DeidentifyError,
    DeidKey,
    Outcome,
    Pseudonym,
    burned_in,
    deidentify_part10,
)

__all__ = [
    "DeidKey",
    "DeidOption",
    "Deidentifier",
    "DeidentifyError",
    "KeyFileError",
    "Outcome",
    "Pseudonym",
    "burned_in",
    "deidentify_part10",
    "load_key",
    "record_patients",
]
