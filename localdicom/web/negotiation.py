"""Media types in, representations out (PS3.18 8.7).

Parsing is lenient the way clients need it to be: parameter values quoted or not (RFC 9110
5.6.6 allows both; OHIF quotes ``type`` and ``transfer-syntax`` unless its data source sets
``omitQuotationForMultipartRequest``, see generateAcceptHeader.ts in
https://github.com/OHIF/Viewers/tree/master/platform/core/src/utils), repeated parameters,
several comma-separated media ranges with q-values (RFC 9110 12.5.1).
Choosing is strict: the first representation the server can produce, in the client's order of
preference, or a 406 that lists what the server could have sent.

The ``accept`` query parameter (PS3.18 8.3.3.1) names the media types in the URL, for a link
a browser follows with its own Accept header: where it is given, it alone decides, and what it
names that this resource does not have is a 406, as from the header. (PS3.18 8.7.8.1 would
fall back to the Accept header, whose ``*/*`` a browser always sends: the link would then
give the default representation instead of saying that the one it names is not there.) The
``charset`` query parameter (8.3.3.2) must admit UTF-8, the character set of every text this
server writes, or the request is a 400.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field, replace
from urllib.parse import unquote

from aiohttp import web

from localdicom.dicom.syntaxes import FRAME_MEDIA_TYPES, MEDIA_TYPE_ALIASES
from localdicom.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN
from localdicom.web.errors import bad_request, not_acceptable

MULTIPART_RELATED = "multipart/related"
DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
#: A zip of Part 10 files (PS3.18 8.6.1.3): the instances as stored unless a transfer
#: syntax is named.
ZIP = "application/zip"
AS_STORED = "*"
#: Query parameters that choose the representation (PS3.18 8.3.3.1, 8.3.3.2), not the content.
QUERY_PARAMETERS = frozenset({"accept", "charset"})
#: Names of UTF-8: IANA's, in any case, and DICOM's Defined Term (PS3.3 C.12.1.1.2).
UTF_8 = frozenset({"utf-8", "utf8", "iso_ir 192"})

#: The transfer syntax a media range without a ``transfer-syntax`` parameter asks for
#: (PS3.18 8.7.3.5.2 and Table 8.7.3-5).
DEFAULT_SYNTAX = {
    DICOM: EXPLICIT_VR_LITTLE_ENDIAN,
    ZIP: AS_STORED,
    **{media_type: syntaxes[0] for media_type, syntaxes in FRAME_MEDIA_TYPES.items()},
}


_MEDIA_TYPE = re.compile(r"[\w!#$&^.+*-]+/[\w!#$&^.+*-]+|\*")


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
    for text in _split_outside_quotes(header, ","):
        media_type, *parameters = (p.strip() for p in _split_outside_quotes(text, ";"))
        if not _MEDIA_TYPE.fullmatch(media_type):
            continue  # not type/subtype: nothing a client can mean by it
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


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """Split on ``separator`` where it is not inside a quoted string (linear time)."""
    parts, start, quoted, escaped = [], 0, False, False
    for position, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:position])
            start = position + 1
    parts.append(text[start:])
    return parts


def _q_value(text: str) -> float:
    """The weight of a media range (RFC 9110 12.4.2); a malformed one counts as 1."""
    try:
        q = float(text)
    except ValueError:
        return 1.0
    return min(max(q, 0.0), 1.0) if math.isfinite(q) else 1.0


@dataclass(frozen=True)
class Offer:
    """A representation the server can produce for a resource.

    ``transfer_syntax`` is a UID, ``*`` for each instance or frame as stored, or None where
    transfer syntaxes do not apply (metadata).
    """

    media_type: str
    transfer_syntax: str | None = None
    multipart: bool = True
    #: Only when the client names this transfer syntax, not as a media type's default.
    explicit_only: bool = False

    def single_part(self) -> Offer:
        return replace(self, multipart=False)

    def __str__(self) -> str:
        syntax = f"; transfer-syntax={self.transfer_syntax}" if self.transfer_syntax else ""
        if self.multipart:
            return f'{MULTIPART_RELATED}; type="{self.media_type}"{syntax}'
        return f"{self.media_type}{syntax}"


def choose(request: web.Request, offers: list[Offer]) -> Offer:
    """The offer that best fits the request's ``accept`` query parameter or else its Accept
    header, or raise 406 (400 for a ``charset`` without UTF-8).

    ``offers`` are in the server's order of preference; the first is the answer to a missing
    Accept or ``*/*``. A range that names no transfer syntax asks for its media type's
    default (``DEFAULT_SYNTAX``).
    """
    _check_charset(request)
    wanted = ", ".join(query_values(request, "accept"))
    accept = wanted or request.headers.get("Accept", "").strip()
    best = _best_offer(accept, tuple(offers))
    if best is None:
        source = " (the accept query parameter)" if wanted else ""
        raise not_acceptable(
            f"cannot produce {accept!r}{source} for this resource; it is available as: "
            + ", ".join(str(offer) for offer in offers)
        )
    return offers[best]


def query_values(request: web.Request, name: str) -> list[str]:
    """The non-empty values of a query parameter, percent-decoded from the raw query.

    A ``+`` is a plus here, not a space as in HTML forms (RFC 3986 gives it no meaning), since
    media types hold it (``application/dicom+xml``); one that stands next to a separator
    rather than inside a word is a form's space (``multipart/related;+type=...``).
    """
    values = []
    for pair in request.rel_url.raw_query_string.split("&"):
        key, _, value = pair.partition("=")
        if unquote(key) == name:
            value = _FORM_SPACE.sub(" ", unquote(value)).strip()
            if value:
                values.append(value)
    return values


_FORM_SPACE = re.compile(r"(?<![A-Za-z0-9])\+|\+(?![A-Za-z0-9])")


def _check_charset(request: web.Request) -> None:
    """A ``charset`` query parameter must name UTF-8 among its character sets (8.3.3.2)."""
    for value in query_values(request, "charset"):
        names = {part.split(";")[0].strip().strip('"').lower() for part in value.split(",")}
        if not names & UTF_8:
            raise bad_request(
                f"charset={value!r}: this server writes text in UTF-8 only; "
                "give charset=utf-8 or leave the parameter out"
            )


@functools.lru_cache(maxsize=512)
def _best_offer(header: str, offers: tuple[Offer, ...]) -> int | None:
    """The place of the best offer; remembered, as a client sends the same few Accept
    headers on every request."""
    ranges = parse_media_ranges(header) if header else [MediaRange("*/*")]
    for media_range in sorted(ranges, key=lambda r: -r.q):
        if media_range.q <= 0:
            continue
        for place, offer in enumerate(offers):
            if _acceptable(media_range, offer):
                return place
    return None


def _acceptable(media_range: MediaRange, offer: Offer) -> bool:
    if media_range.type in ("*/*", "*"):
        return not offer.explicit_only  # the server's choice: its first offer
    if media_range.type == MULTIPART_RELATED:
        part_type = MediaRange(_canonical(media_range.params.get("type", offer.media_type)))
        if not offer.multipart or not part_type.matches(offer.media_type):
            return False
    elif media_range.type == "multipart/*":
        return offer.multipart and not offer.explicit_only
    elif offer.multipart or not MediaRange(_canonical(media_range.type)).matches(offer.media_type):
        return False
    named = media_range.params.get("transfer-syntax")
    if offer.explicit_only and named != offer.transfer_syntax:
        return False
    wanted = named or DEFAULT_SYNTAX.get(offer.media_type)
    return offer.transfer_syntax is None or wanted == offer.transfer_syntax


def _canonical(media_type: str) -> str:
    media_type = media_type.lower()
    return MEDIA_TYPE_ALIASES.get(media_type, media_type)
