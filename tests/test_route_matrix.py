"""Every route of the table with UID path segments, under every prefix, for every method the
table gives it: a malformed UID in any one segment is a 400 that names the attribute, and a
valid UID of nothing in the archive is a 404.

The routes come from ``localdicom.app.ROUTES`` and ``PREFIXES`` themselves, so a route added
to the table is checked without being listed here. The other segments hold the blue circle's
UIDs (``{frames}`` is 1, ``{path}`` its Pixel Data), on one in-process app holding the three
samples; a POST carries a new instance of the blue circle's series. The archive must be as it
was after each DELETE or POST, and after them all.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from localdicom.app import PREFIXES, ROUTES
from tests.helpers import app_client
from tests.helpers.stocked import (
    ATTRIBUTE,
    BLUE,
    UNKNOWN,
    Stocked,
    assert_error,
    new_instance,
    request,
    stock,
)

#: A route pattern's variable segments: ``{name}`` or ``{name:regex}``.
SEGMENT = re.compile(r"\{(\w+)(?::([^{}]*))?\}")
#: What each segment that is not under test holds: the blue circle, its first frame, its
#: Pixel Data, a rejection reason (PS3.16 CID 7011).
VALID = {**BLUE, "frames": "1", "path": "7FE00010", "code": "113001^DCM"}
MALFORMED = "1.2.abc"

#: Route segments whose unknown UID is not a lookup. STOW-RS to /studies/{study} stores into
#: that study whether or not the archive holds it yet (PS3.18 10.5): a new study UID is not
#: a 404; an instance of another study is refused with 409 (tests/test_errors.py).
NOT_A_LOOKUP = {("POST", "study")}


def prefixes() -> list[str]:
    """Every literal prefix of PREFIXES: ``{name:a|b}`` stands for a and for b."""
    expanded = []
    for prefix in PREFIXES:
        variables = SEGMENT.findall(prefix)
        if not variables:
            expanded.append(prefix)
            continue
        ((_name, alternatives),) = variables
        assert re.fullmatch(r"[\w-]+(\|[\w-]+)*", alternatives), f"cannot expand {prefix!r}"
        expanded += [SEGMENT.sub(choice, prefix) for choice in alternatives.split("|")]
    return expanded


def fill(route: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"{route}: no value for {{{name}}}: add one to VALID"
        return values[name]

    return SEGMENT.sub(value, route)


def cases() -> Iterator[Any]:
    for method, pattern, _handler in ROUTES:
        route = SEGMENT.sub(lambda match: "{" + match.group(1) + "}", pattern)  # no regexes
        uid_segments = [name for name, _ in SEGMENT.findall(route) if name in ATTRIBUTE]
        for prefix in prefixes():
            for segment in uid_segments:
                for kind, uid in (("malformed", MALFORMED), ("unknown", UNKNOWN)):
                    if kind == "unknown" and (method, segment) in NOT_A_LOOKUP:
                        continue
                    path = prefix + fill(route, {**VALID, segment: uid})
                    case_id = f"{method} {prefix}" + route.replace(f"{{{segment}}}", f"{{{kind}}}")
                    yield pytest.param(method, path, segment, kind, id=case_id)


CASES = list(cases())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stocked(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stocked]:
    archive = tmp_path_factory.mktemp("route-matrix") / "archive"
    async with app_client(archive) as client:
        yield await stock(client, archive)


def test_the_matrix_has_every_route_with_a_uid_segment_under_every_prefix() -> None:
    assert prefixes() == ["", "/v1", "/v2", "/dicom-web"]
    routes = {(method, route) for method, route, _ in ROUTES if "{study" in route}
    assert len(routes) >= 20  # STOW-RS, QIDO-RS, WADO-RS, rendered, thumbnails, DELETE
    assert len(CASES) >= len(routes) * 4 * 2


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("method", "path", "segment", "kind"), CASES)
async def test_route_answers_400_to_a_malformed_uid_and_404_to_an_unknown_one(
    stocked: Stocked, method: str, path: str, segment: str, kind: str
) -> None:
    options: dict[str, Any] = {}
    if method == "POST":
        _, instance = new_instance()  # stored, it would change the archive
        options = {"data": instance, "headers": {"Content-Type": "application/dicom"}}
    answer = await request(stocked.client, method, path, **options)
    if kind == "malformed":
        assert_error(answer, 400, ATTRIBUTE[segment])
    else:
        assert_error(answer, 404)
    if method != "GET":
        await stocked.assert_unchanged()


@pytest.mark.asyncio(loop_scope="module")
async def test_the_archive_is_as_it_was(stocked: Stocked) -> None:
    await stocked.assert_unchanged()
