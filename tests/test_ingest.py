"""The one duplicate rule every way in shares (STOW-RS, import directly and through a server),
and how an import through the server reads the server's verdict from a STOW-RS response
(PS3.18 10.5.3; Failure Reasons from PS3.4 B.2.3)."""

from __future__ import annotations

import json

import pytest

from localdicom.catalog import Decision, FailureReason, decide
from localdicom.importer.stow_client import stow_outcome

A, B = "a" * 64, "b" * 64


@pytest.mark.parametrize(
    ("stored", "digest", "overwrite", "expected"),
    [
        (None, A, False, Decision.STORE),
        (None, A, True, Decision.STORE),
        (A, A, False, Decision.ALREADY_PRESENT),
        (A, A, True, Decision.ALREADY_PRESENT),
        (A, B, False, Decision.CONFLICT),
        (A, B, True, Decision.REPLACE),
    ],
)
def test_decide(stored: str | None, digest: str, overwrite: bool, expected: Decision) -> None:
    assert decide(stored, digest, overwrite=overwrite) is expected


def test_only_store_and_replace_write() -> None:
    assert {decision for decision in Decision if decision.writes} == {
        Decision.STORE,
        Decision.REPLACE,
    }


def failed_response(reason: int) -> bytes:
    item = {"00081197": {"vr": "US", "Value": [reason]}}
    return json.dumps({"00081198": {"vr": "SQ", "Value": [item]}}).encode()


def test_a_200_is_stored_or_already_present_by_what_was_there_before() -> None:
    assert stow_outcome(200, "", b"{}", present=False) == (Decision.STORE, "")
    assert stow_outcome(200, "", b"{}", present=True) == (Decision.ALREADY_PRESENT, "")


def test_a_duplicate_failure_reason_is_a_conflict_with_the_servers_words() -> None:
    warning = '299 localdicom "SOP Instance 1.2 is already stored with different content"'
    body = failed_response(FailureReason.DUPLICATE_SOP_INSTANCE)
    decision, reason = stow_outcome(409, warning, body, present=True)
    assert decision is Decision.CONFLICT
    assert reason == "SOP Instance 1.2 is already stored with different content"


def test_any_other_failure_is_no_decision_but_an_error() -> None:
    body = failed_response(FailureReason.OUT_OF_RESOURCES)
    decision, reason = stow_outcome(507, "", body, present=False)
    assert decision is None
    assert reason.startswith("the server answered 507")
