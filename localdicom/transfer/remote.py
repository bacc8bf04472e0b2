"""The other archive a pull or push talks to: a DICOMweb base URL or a DICOM node
(``dicom://AE@host:port``), the credentials to present to it, and the one rule for text
that leaves this process (a log line, a progress message, an error, the transfer record):
no secret in it.

Credentials come from the options, else from the environment (``LOCALDICOM_REMOTE_TOKEN``,
``LOCALDICOM_REMOTE_USER``, ``LOCALDICOM_REMOTE_PASSWORD``: not ``LOCALDICOM_TOKEN``, which
is the local server's own token and must never be sent elsewhere), else from ``~/.netrc``
(or the file ``NETRC`` names) for the remote's host, as curl and requests read it.
"""

from __future__ import annotations

import base64
import netrc
import os
import ssl
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

#: What a secret is written as wherever text leaves the process.
HIDDEN = "***"


class BadRemote(ValueError):
    """A remote that cannot be used as given; the message says what to write instead."""


@dataclass(frozen=True)
class DicomNode:
    """A DICOM node: its AE title and where it listens."""

    ae_title: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"dicom://{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Credentials:
    """What is presented to a DICOMweb remote; ``secrets`` lists every value to hide."""

    headers: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()

    def hide(self, text: str) -> str:
        """``text`` with every secret (and its Basic encoding) replaced by ***."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, HIDDEN)
        return text


def parse_remote(text: str) -> tuple[str, DicomNode | None, tuple[str, str] | None]:
    """The remote's address without credentials; the DICOM node for ``dicom://``; and a
    user and password written into a URL (``https://user:pass@host/...``), taken out of it."""
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme == "dicom":
        return _dicom(parsed, text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise BadRemote(
            f"{_without_userinfo(parsed)!r} is neither a DICOMweb base URL "
            "(https://host/dicom-web) nor a DICOM node (dicom://AE@host:port)"
        )
    userinfo = None
    if parsed.username is not None:
        userinfo = (
            urllib.parse.unquote(parsed.username),
            urllib.parse.unquote(parsed.password or ""),
        )
    return _without_userinfo(parsed).rstrip("/"), None, userinfo


def _without_userinfo(parsed: urllib.parse.SplitResult) -> str:
    host = parsed.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parsed.port is None else f"{host}:{parsed.port}"
    return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, "", ""))


def _dicom(parsed: urllib.parse.SplitResult, text: str) -> tuple[str, DicomNode, None]:
    title = urllib.parse.unquote(parsed.username or "")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not title or not parsed.hostname or port is None or len(title) > 16:
        raise BadRemote(f"{text!r} is not dicom://AE@host:port (e.g. dicom://ORTHANC@pacs:4242)")
    node = DicomNode(title, parsed.hostname, port)
    return node.address, node, None


def credentials(
    url: str,
    *,
    token: str | None,
    user: str | None,
    password: str | None,
    headers: tuple[str, ...],
    from_url: tuple[str, str] | None = None,
) -> Credentials:
    """The headers for ``url``: a bearer token, else HTTP Basic (options, the URL, or
    ~/.netrc), plus every ``--header 'Name: value'``."""
    sent: dict[str, str] = {}
    secrets: list[str] = []
    if from_url and user is None:
        user, password = from_url
    if token:
        sent["Authorization"] = f"Bearer {token}"
        secrets.append(token)
    elif user is not None or (found := _netrc(url)) is None:
        if user is not None:
            sent["Authorization"] = _basic(user, password or "", secrets)
    else:
        sent["Authorization"] = _basic(found[0], found[1], secrets)
    for header in headers:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            raise BadRemote(f"--header {header.split(':')[0]!r}... is not 'Name: value'")
        sent[name.strip()] = value.strip()
        secrets.append(value.strip())
    return Credentials(sent, tuple(secrets))


def _basic(user: str, password: str, secrets: list[str]) -> str:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    secrets += [password, encoded]
    return f"Basic {encoded}"


def _netrc(url: str) -> tuple[str, str] | None:
    """The login and password ~/.netrc (or $NETRC) gives for the URL's host, if any."""
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(urllib.parse.urlsplit(url).hostname or "")
    except (OSError, netrc.NetrcParseError):
        return None
    if entry is None:
        return None
    login, _account, password = entry
    return login or "", password or ""


def tls_context(ca_file: Path | None, insecure: bool) -> ssl.SSLContext | bool:
    """Verification on (the system's CAs, or ``ca_file``'s), or off with ``insecure``."""
    if insecure:
        return False
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context
