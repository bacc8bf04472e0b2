"""Datasets made ready to be written in another encoding than the one they were read in.

pydicom writes a value it has not converted (a raw element) as the bytes it read: right when
the encoding stays, wrong when it changes. Two changes need every value converted first:

- implicit VR read (as some files are, whatever their transfer syntax says) and written
  with explicit VR: each element needs its VR, from the data dictionary (PS3.5 7.1.3);
- big endian read (Explicit VR Big Endian, PS3.5 A.3, retired) and written in little
  endian: numbers are converted by pydicom, but the values it keeps as bytes (OW, OF, OL,
  OD, OV, and pixel data) have their byte order reversed here, by VR (PS3.5 7.3): 16-bit
  words for OW, the pixel cell for pixel data (as the frames resource does), 4 bytes for OF
  and OL, 8 for OD and OV. A US-or-OW LUT Data (PS3.3 C.11.1) read as OW is words too.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from localdicom.dicom.frames import to_little_endian, value_unit

_PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def read_implicitly(ds: Dataset) -> bool:
    """True when pydicom found ``ds`` encoded with implicit VR (whatever the transfer syntax
    says): its raw elements have no VR of their own."""
    tags = list(ds.keys())  # iterating a Dataset would convert its elements
    return any(
        getattr(ds.get_item(tag, keep_deferred=True), "is_implicit_VR", False) for tag in tags
    )


def convert_all(ds: Dataset) -> None:
    """Convert every element of ``ds`` and of its sequences' items from its raw bytes, in
    place, so that each has a VR and a value independent of the encoding it was read in;
    values kept as bytes are swapped to little endian if they were read big endian."""
    big_endian = ds.original_encoding[1] is False
    _convert(ds, big_endian, ds.get("BitsAllocated"))
    if big_endian:
        ds.set_original_encoding(False, True, ds.original_character_set)


def _convert(ds: Dataset, big_endian: bool, bits_allocated: int | None) -> None:
    for tag in list(ds.keys()):
        element = ds[tag]  # converts a raw element, resolving its VR
        if element.VR == "SQ":
            for item in element.value or []:
                _convert(item, big_endian, bits_allocated)
            continue
        if not big_endian or not isinstance(element.value, bytes):
            continue
        pixel_bits = int(bits_allocated or 8) if element.tag in _PIXEL_DATA_TAGS else None
        element.value = to_little_endian(element.value, value_unit(element.VR, pixel_bits))
