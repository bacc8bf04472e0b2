"""``localdicom pull`` and ``push``: instances moved between the archive and another
archive, over DICOMweb or DICOM, resumably.

:mod:`.remote` names the remote and its credentials; :mod:`.dicomweb`, :mod:`.dimse` (C-FIND,
C-GET, C-MOVE) and :mod:`.cstore` (C-STORE) talk to it, and hand over what they fetched as
:mod:`.received`; :mod:`.plan` lists what a selection names there; :mod:`.intake` stores what
is pulled through the import's sink; :mod:`.pull` and :mod:`.push` drive a run
(:mod:`.follow`: ``push --follow``, the change feed; :mod:`.deidentified`: ``push
--deidentify``), :mod:`.report` counts, and :mod:`.commands` are the two commands. What was
moved is recorded per remote in the archive (:mod:`localdicom.archive.transfers`).

The modules import what only some runs need (pydicom, pynetdicom) where those runs need it:
``push`` to a DICOMweb remote starts without them.
"""
