"""A small blocking STOW-RS client for an import that goes through the running server:
one kept-alive connection per sending thread, and the one question asked before each
instance (is this SOP Instance UID stored already?)."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import urllib.parse
from typing import BinaryIO

from localdicom.catalog import Decision, FailureReason

#: STOW-RS response attributes (PS3.18 Table 10.5.3-1).
FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"


class StowClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 600) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self.local = threading.local()

    def is_stored(self, sop: str) -> bool:
        query = urllib.parse.urlencode({"SOPInstanceUID": sop})
        status, _, body = self.request("GET", f"/instances?{query}", None)
        return status == 200 and bool(json.loads(body or b"[]"))

    def store(self, body: BinaryIO, size: int) -> tuple[int, str, bytes]:
        """POST one instance as a single application/dicom body: status, Warning, body."""
        return self.request("POST", "/studies", body, size)

    def request(
        self, method: str, path: str, body: BinaryIO | None, size: int = 0
    ) -> tuple[int, str, bytes]:
        headers = {"Accept": "application/dicom+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            headers |= {"Content-Type": "application/dicom", "Content-Length": str(size)}
        try:
            return _exchange(self._connection(fresh=False), method, path, body, headers)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            # a kept-alive connection the server had closed: once more on a new one
            if body is not None:
                body.seek(0)
            return _exchange(self._connection(fresh=True), method, path, body, headers)

    def _connection(self, *, fresh: bool) -> http.client.HTTPConnection:
        connection = getattr(self.local, "connection", None)
        if connection is None or fresh:
            if connection is not None:
                connection.close()
            connection = connect(self.url, self.timeout)
            self.local.connection = connection
        return connection


def connect(url: str, timeout: float) -> http.client.HTTPConnection:
    """A connection to the server at ``url``; one that listens on every address is reached
    on loopback."""
    parsed = urllib.parse.urlsplit(url)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(parsed.hostname or "", parsed.hostname)
    return http.client.HTTPConnection(host, parsed.port, timeout=timeout)


def _exchange(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    body: BinaryIO | None,
    headers: dict[str, str],
) -> tuple[int, str, bytes]:
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.getheader("Warning", ""), response.read()


def stow_outcome(
    status: int, warning: str, body: bytes, present: bool
) -> tuple[Decision | None, str]:
    """What a single-instance STOW-RS response says became of the instance, and why; no
    decision when it failed for another reason than a duplicate (README, "STOW-RS")."""
    if status == 200:
        return (Decision.ALREADY_PRESENT if present else Decision.STORE), ""
    reasons = []
    with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
        failed = json.loads(body)[FAILED_SOP_SEQUENCE]["Value"]
        reasons = [item[FAILURE_REASON]["Value"][0] for item in failed]
    text = warning.partition('"')[2].rstrip('"') or body[:200].decode("utf-8", "replace")
    if FailureReason.DUPLICATE_SOP_INSTANCE in reasons:
        return Decision.CONFLICT, text
    return None, f"the server answered {status}: {text}"
