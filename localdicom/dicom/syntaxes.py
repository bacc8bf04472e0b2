"""Which media types go with which transfer syntaxes, and what this server can produce.

The tables follow PS3.18 Table 8.7.3-2 (single frame and bulk pixel media types) and
Table 8.7.3-5 (their transfer syntaxes, the first being each media type's default). What can
be produced depends on the codecs installed: pydicom with GDCM and the pylibjpeg plugins
decodes almost everything; it encodes RLE, JPEG-LS (with pyjpegls) and JPEG 2000; Pillow
writes baseline JPEG.
"""

from __future__ import annotations

from functools import cache

from pydicom.pixels import get_decoder, get_encoder

from localdicom.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_TRANSFER_SYNTAXES,
)

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
JPEG_2000_PART2_LOSSLESS = "1.2.840.10008.1.2.4.92"
JPEG_2000_PART2 = "1.2.840.10008.1.2.4.93"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

OCTET_STREAM = "application/octet-stream"

#: Media type of a frame -> its transfer syntaxes, the default first (PS3.18 Table 8.7.3-5).
FRAME_MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    OCTET_STREAM: (EXPLICIT_VR_LITTLE_ENDIAN,),
    "image/jpeg": (JPEG_BASELINE, JPEG_EXTENDED, JPEG_LOSSLESS, JPEG_LOSSLESS_SV1),
    "image/jls": (JPEG_LS_LOSSLESS, JPEG_LS_NEAR_LOSSLESS),
    "image/jp2": (JPEG_2000_LOSSLESS, JPEG_2000),
    "image/jpx": (JPEG_2000_PART2_LOSSLESS, JPEG_2000_PART2),
    "image/jphc": (HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL, HTJ2K),
    "image/dicom-rle": (RLE_LOSSLESS,),
}
#: Older names clients still send for the same media types.
MEDIA_TYPE_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}

#: Syntaxes that lose information (PS3.5 Table A-1 "lossy"); HTJ2K .203 may be either.
LOSSY = frozenset(
    {JPEG_BASELINE, JPEG_EXTENDED, JPEG_LS_NEAR_LOSSLESS, JPEG_2000, JPEG_2000_PART2, HTJ2K}
)

#: Whole-instance syntaxes a dataset can be rewritten in (pydicom's encoders, PS3.5 A).
INSTANCE_TARGETS = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    RLE_LOSSLESS,
    JPEG_LS_LOSSLESS,
    JPEG_2000_LOSSLESS,
)


def media_type_of(syntax: str) -> str:
    """The media type a frame in ``syntax`` is served as."""
    if syntax in NATIVE_TRANSFER_SYNTAXES:
        return OCTET_STREAM
    for media_type, syntaxes in FRAME_MEDIA_TYPES.items():
        if syntax in syntaxes:
            return media_type
    return OCTET_STREAM


@cache
def can_decode(syntax: str) -> bool:
    """True when pixel data stored in ``syntax`` can be decoded here."""
    if syntax in NATIVE_TRANSFER_SYNTAXES:
        return True
    try:
        return get_decoder(syntax).is_available
    except NotImplementedError:
        return False


def frame_targets(stored: str, bits_stored: int) -> list[str]:
    """Transfer syntaxes a frame stored in ``stored`` can be served in: as stored, and, when
    it can be decoded, every lossless syntax with an encoder, plus baseline JPEG for data of
    at most 8 bits (the only lossy encoder used: Pillow's)."""
    targets = [stored] if stored not in NATIVE_TRANSFER_SYNTAXES else []
    if can_decode(stored):
        targets.append(EXPLICIT_VR_LITTLE_ENDIAN)
        targets += [
            syntax
            for syntaxes in FRAME_MEDIA_TYPES.values()
            for syntax in syntaxes
            if (syntax not in LOSSY or (syntax == JPEG_BASELINE and bits_stored <= 8))
            and can_encode(syntax)
        ]
    return list(dict.fromkeys(targets))


def is_lossy_reencode(stored: str, target: str) -> bool:
    """Encoding already lossy data lossily again loses more: only when a client names the
    target syntax itself, never as the default of a media type it asked for."""
    return stored in LOSSY and target in LOSSY and target != stored


def instance_targets(stored: str) -> list[str]:
    """Transfer syntaxes a whole instance stored in ``stored`` can be served in."""
    if not can_decode(stored):
        return [stored]
    return list(dict.fromkeys([stored, *(s for s in INSTANCE_TARGETS if can_encode(s))]))


@cache
def can_encode(syntax: str) -> bool:
    """True when pixel data can be encoded in ``syntax`` here (Pillow writes baseline JPEG)."""
    if syntax in NATIVE_TRANSFER_SYNTAXES or syntax == JPEG_BASELINE:
        return True
    try:
        return get_encoder(syntax).is_available
    except NotImplementedError:
        return False
