"""Media types in, representations out (PS3.18 8.7).

Parsing is lenient the way clients need it to be (CLIENTS.md 3a): quoted or unquoted
parameters, repeated parameters, several comma-separated media ranges with q-values.
Choosing is strict: the first representation the server can produce, in the client's order of
preference, or a 406 that lists what the server could have sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aiohttp import web

from localdicom.web.errors import not_acceptable

MULTIPART_RELATED = "multipart/related"
DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
AS_STORED = "*"

_COMMA_PARTS = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*")+')
_SEMICOLON_PARTS = re.compile(r'(?:[^;"]|"(?:[^"\\]|\\.)*")+')


@dataclass
class MediaRange:
    """One media type or range from an Accept or Content-Type header."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def matches(self, media_type: str) -> bool:
        main, _, sub = self.type.partition("/")
        offered_main, _, offered_sub = media_type.partition("/")
        return main in ("*", offered_main) and sub in ("*", offered_sub)


def parse_media_ranges(header: str) -> list[MediaRange]:
    """Split a header into media ranges; parameter names are lower-cased, first one wins."""
    ranges = []
    for text in _COMMA_PARTS.findall(header):
        media_type, *parameters = (p.strip() for p in _SEMICOLON_PARTS.findall(text))
        if not media_type:
            continue
        media_range = MediaRange(media_type.lower())
        for parameter in parameters:
            name, _, value = (part.strip() for part in parameter.partition("="))
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            if name.lower() == "q":
                media_range.q = _q_value(value)
            else:
                media_range.params.setdefault(name.lower(), value)
        ranges.append(media_range)
    return ranges


def _q_value(text: str) -> float:
    try:
        return min(max(float(text), 0.0), 1.0)
    except ValueError:
        return 1.0


@dataclass(frozen=True)
class Offer:
    """A representation the server can produce for a resource.

    ``transfer_syntax`` is a UID, ``*`` for each instance or frame as stored, or None where
    transfer syntaxes do not apply (metadata).
    """

    media_type: str
    transfer_syntax: str | None = None
    multipart: bool = True

    def __str__(self) -> str:
        syntax = f"; transfer-syntax={self.transfer_syntax}" if self.transfer_syntax else ""
        if self.multipart:
            return f'{MULTIPART_RELATED}; type="{self.media_type}"{syntax}'
        return f"{self.media_type}{syntax}"


def choose(request: web.Request, offers: list[Offer], default_syntax: str | None) -> Offer:
    """The offer that best fits the request's Accept header, or raise 406.

    ``offers`` are in the server's order of preference; the first is the answer to a missing
    Accept or ``*/*``. A range that names no transfer syntax asks for ``default_syntax``
    (Explicit VR Little Endian for DICOM and uncompressed frames, PS3.18 8.7.3.5).
    """
    header = request.headers.get("Accept", "").strip()
    ranges = parse_media_ranges(header) if header else [MediaRange("*/*")]
    for media_range in sorted(ranges, key=lambda r: -r.q):
        if media_range.q <= 0:
            continue
        for offer in offers:
            if _acceptable(media_range, offer, default_syntax):
                return offer
    raise not_acceptable(
        f"cannot produce {header!r} for this resource; it is available as: "
        + ", ".join(str(offer) for offer in offers)
    )


def _acceptable(media_range: MediaRange, offer: Offer, default_syntax: str | None) -> bool:
    if media_range.type in ("*/*", "*"):
        return True  # the server's choice: its first offer
    if media_range.type == MULTIPART_RELATED:
        part_type = MediaRange(media_range.params.get("type", offer.media_type).lower())
        if not offer.multipart or not part_type.matches(offer.media_type):
            return False
    elif media_range.type == "multipart/*":
        return offer.multipart
    elif offer.multipart or not media_range.matches(offer.media_type):
        return False
    wanted = media_range.params.get("transfer-syntax", default_syntax)
    return offer.transfer_syntax is None or wanted == offer.transfer_syntax
