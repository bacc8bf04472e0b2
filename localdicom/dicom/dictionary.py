"""The DICOM data dictionary (PS3.6): keywords, tags and VRs, from pydicom's copy of it,
imported when first consulted.

Importing pydicom takes 0.2-0.3 s (its pixel data handlers load numpy and the codecs). A
command that names no attribute (``push --all``, ``ls``) never consults the dictionary, and so
starts without it; the modules that parse datasets import pydicom themselves.
"""

from __future__ import annotations


def keyword_for_tag(tag: int) -> str:
    """The keyword of ``tag``, "" when the dictionary has none."""
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag)


def tag_for_keyword(keyword: str) -> int | None:
    from pydicom.datadict import tag_for_keyword

    return tag_for_keyword(keyword)


def dictionary_VR(tag: int) -> str:
    """The VR of ``tag``; KeyError when the dictionary does not know it."""
    from pydicom.datadict import dictionary_VR

    return dictionary_VR(tag)
