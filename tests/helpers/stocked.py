"""An in-process app on an archive holding the three samples, requests sent byte for byte,
and checks of error answers: a status, a message a person can read, an archive left as it was.

A snapshot of the archive is every file's relative path, size and SHA-256, except the
``.incoming`` upload area, plus the answers of the three QIDO searches. Paths are sent exactly
as written (``yarl.URL(..., encoded=True)``): the client would otherwise resolve ``..`` and
``%2e%2e`` itself and the server would never see them.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from pydicom.uid import generate_uid
from yarl import URL

from tests.helpers import SAMPLES, SERIES_CIRCLE, SOP_BLUE_CIRCLE, STUDY_UID

SAMPLE_FILES = ("blue-circle.dcm", "green-square.dcm", "red-triangle.dcm")
INSTANCE = "/studies/{study}/series/{series}/instances/{instance}"
BLUE = {"study": STUDY_UID, "series": SERIES_CIRCLE, "instance": SOP_BLUE_CIRCLE}
BLUE_PATH = INSTANCE.format(**BLUE)
#: The DICOM attribute each UID segment of a route names.
ATTRIBUTE = {
    "study": "StudyInstanceUID",
    "series": "SeriesInstanceUID",
    "instance": "SOPInstanceUID",
}
#: A valid UID that no sample uses.
UNKNOWN = "1.2.826.0.1.3680043.8.498.99999999999999999999999999999999999999"

BOUNDARY = "localdicom-test-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'

#: What must never reach a client: stack traces, exception class names, Python reprs.
PYTHON_INTERNALS = re.compile(
    r"Traceback|File \"|\b[A-Z]\w*(Error|Exception)\b|object at 0x|bytearray\(|localdicom\.\w"
)


# helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


async def _answer(response: ClientResponse) -> Answer:
    return Answer(
        response.status, response.content_type, dict(response.headers), await response.read()
    )


async def request(client: TestClient, method: str, path: str, **kwargs: Any) -> Answer:
    """Send ``path`` exactly as written: no dot-segment removal, no re-encoding."""
    root = str(client.make_url("/")).rstrip("/")
    url = URL(root + path, encoded=True)
    async with client.session.request(method, url, **kwargs) as response:
        return await _answer(response)


async def stow(client: TestClient, body: bytes, content_type: str = STOW_TYPE, **kwargs) -> Answer:
    path = kwargs.pop("path", "/studies")
    headers = {"Content-Type": content_type, **kwargs.pop("headers", {})}
    return await request(client, "POST", path, data=body, headers=headers, **kwargs)


def assert_readable(text: str) -> None:
    """Short text for a person: no stack trace, no Python internals."""
    assert text.strip(), "the error has no message"
    assert len(text) <= 2000, f"the message is {len(text)} characters long"
    assert not PYTHON_INTERNALS.search(text), f"Python internals in {text!r}"


def assert_error(answer: Answer, status: int, *fragments: str) -> None:
    assert answer.status == status, f"{answer.status} {answer.text[:500]!r}"
    assert answer.content_type == "text/plain"
    assert_readable(answer.text)
    for fragment in fragments:
        assert fragment in answer.text


def sample(name: str = "blue-circle.dcm") -> bytes:
    return (SAMPLES / name).read_bytes()


def derived(name: str = "blue-circle.dcm", *, remove: tuple[str, ...] = (), **changes) -> bytes:
    """A sample with some attributes changed or removed, as Part 10 bytes."""
    ds = pydicom.dcmread(SAMPLES / name)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    if "SOPInstanceUID" in changes:
        ds.file_meta.MediaStorageSOPInstanceUID = changes["SOPInstanceUID"]
    for keyword in remove:
        delattr(ds, keyword)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def new_instance() -> tuple[str, bytes]:
    """A SOP Instance UID not in the archive, and an instance (in the blue series) with it."""
    sop = generate_uid()
    return sop, derived(SOPInstanceUID=sop)


def multipart(
    *parts: bytes,
    boundary: str = BOUNDARY,
    close: bool = True,
    headers: str = "Content-Type: application/dicom",
) -> bytes:
    head = f"--{boundary}\r\n{headers}\r\n\r\n".encode()
    body = b"".join(head + part + b"\r\n" for part in parts)
    return body + (b"--" + boundary.encode() + b"--\r\n" if close else b"")


def failure_reasons(answer: Answer) -> list[int]:
    items = answer.json()["00081198"]["Value"]
    return [item["00081197"]["Value"][0] for item in items]


def assert_store_failure(answer: Answer, status: int, reason: int, *warning: str) -> None:
    """A Store Instances Response (PS3.18 10.5.3) with one failure, and a Warning saying why."""
    assert answer.status == status, f"{answer.status} {answer.text[:500]!r}"
    assert answer.content_type == "application/dicom+json"
    assert failure_reasons(answer) == [reason]
    header = answer.headers.get("Warning", "")
    assert header.startswith('299 localdicom "'), header
    assert_readable(header)
    for fragment in warning:
        assert fragment in header


# the archive and its snapshot --------------------------------------------------------------


def files_of(archive: Path) -> list[tuple[str, int, str]]:
    return sorted(
        (
            path.relative_to(archive).as_posix(),
            path.stat().st_size,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in archive.rglob("*")
        # uploads in progress; the change feed, which records what succeeded (test_changefeed)
        if path.is_file() and path.relative_to(archive).parts[0] not in (".incoming", ".changefeed")
    )


@dataclass
class Stocked:
    """An app whose archive holds the samples, and what it looked like before the test."""

    client: TestClient
    archive: Path
    files: list[tuple[str, int, str]] | None = None
    searches: list[Any] | None = None

    async def searches_now(self) -> list[Any]:
        answers = []
        for path in ("/studies", "/series", "/instances"):
            answer = await request(self.client, "GET", path)
            assert answer.status == 200
            answers.append(answer.json())
        return answers

    async def take_snapshot(self) -> None:
        self.files = files_of(self.archive)
        self.searches = await self.searches_now()

    async def assert_unchanged(self) -> None:
        assert files_of(self.archive) == self.files
        assert await self.searches_now() == self.searches
        assert list((self.archive / ".incoming").iterdir()) == [], "an upload was left behind"


async def stock(client: TestClient, archive: Path) -> Stocked:
    answer = await stow(client, multipart(*(sample(name) for name in SAMPLE_FILES)))
    assert answer.status == 200, answer.text
    stocked = Stocked(client, archive)
    await stocked.take_snapshot()
    assert len(stocked.files) == 6  # three .dcm and their sidecars
    return stocked
