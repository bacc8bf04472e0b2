"""De-identification as the commands use it: the pure rules (:mod:`localdicom.dicom.deidentify`)
with the key file that keeps the secret and the pseudonym map outside the archive
(:mod:`.keyfile`). ``import``, ``export`` and ``push`` each need one line per instance,
and one to record the patients met in the key file's map at the end::

    deidentifier = Deidentifier(load_key(key_path), ["retain-modified-dates"])
    outcome = deidentify_part10(source, target, deidentifier)  # binary files in and out
    outcome.review      # why the pixels need a look before sharing, "" if no known reason
    record_patients(key_path, [outcome.patient, ...])

A :class:`Deidentifier` is picklable and pure (it writes nothing but ``target``), so worker
processes can each hold one; the pseudonyms and UIDs derive from the key's secret, so workers
agree without sharing state. ``Deidentifier.deidentify(dataset)`` does the same on a pydicom
Dataset (a copy is returned; the pixel data is shared, never changed).

:class:`Deidentify` is the command line's choice (``--deidentify``, ``--deid-key``,
``--deid-option``, ``--reject-burned-in``), checked the same way for every command.
"""

from localdicom.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "localdicom.deid.choice": ["Deidentify"],
        "localdicom.deid.keyfile": ["KeyFileError", "load_key", "record_patients"],
        "localdicom.dicom.confidentiality_options": ["DeidOption"],
        "localdicom.dicom.deidentify": [
            "Deidentifier",
            "DeidentifyError",
            "Outcome",
            "burned_in",
            "deidentify_part10",
        ],
        "localdicom.dicom.pseudonyms": ["DeidKey", "Pseudonym"],
    },
)
