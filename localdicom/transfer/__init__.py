"""``localdicom pull`` and ``push``: instances moved between the archive and another
archive, over DICOMweb or DICOM, resumably.

:mod:`.remote` names the remote and its credentials; :mod:`.dicomweb`, :mod:`.dimse` (C-FIND,
C-GET, C-MOVE) and :mod:`.cstore` (C-STORE) talk to it; :mod:`.plan` lists what a selection
names there; :mod:`.intake` stores what is pulled through the import's sink; :mod:`.pull`
and :mod:`.push` drive a run (:mod:`.follow`: ``push --follow``, the change feed;
:mod:`.deidentified`: ``push --deidentify``), :mod:`.report` counts, and :mod:`.commands`
are the two commands. What was moved is recorded per remote in the archive
(:mod:`localdicom.archive.transfers`).
"""

from localdicom.transfer.options import TransferOptions
from localdicom.transfer.pull import pull
from localdicom.transfer.push import push

__all__ = ["TransferOptions", "pull", "push"]
