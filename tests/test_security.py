"""CORS, the DNS-rebinding Host guard and the access token, through the in-process app."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from localdicom.app import make_app
from localdicom.cli import main
from localdicom.web.security import host_name, is_loopback_address
from tests.helpers import app_settings

VIEWER = "http://localhost:3000"
FOREIGN = "https://evil.example"
TOKEN = "s3cret-token"


async def _client(aiohttp_client, archive: Path, **settings):
    return await aiohttp_client(make_app(app_settings(archive, **settings)))


# CORS ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    ["http://localhost:3000", "http://127.0.0.1:8080", "https://localhost", "http://[::1]:3000"],
)
async def test_loopback_origins_are_allowed_by_default(client, origin: str) -> None:
    response = await client.get("/studies", headers={"Origin": origin})
    assert response.status in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert "Origin" in response.headers["Vary"]
    exposed = response.headers["Access-Control-Expose-Headers"]
    for name in ("Content-Type", "Content-Length", "Content-Location", "Warning"):
        assert name in exposed


@pytest.mark.parametrize("prefix", ["", "/v1", "/v2", "/dicom-web"])
async def test_preflight_is_answered_on_every_route(client, prefix: str) -> None:
    path = f"{prefix}/studies/1.2.3/series/4.5/instances/6.7/frames/1"
    response = await client.options(
        path,
        headers={
            "Origin": VIEWER,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "accept, authorization, content-type",
        },
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == VIEWER
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    for name in ("accept", "authorization", "content-type"):
        assert name in allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "DELETE" in response.headers["Access-Control-Allow-Methods"]


async def test_errors_carry_cors_headers_so_viewers_can_read_them(client) -> None:
    response = await client.get("/studies/1.2.3/metadata", headers={"Origin": VIEWER})
    assert response.status == 404
    assert response.headers["Access-Control-Allow-Origin"] == VIEWER


async def test_foreign_origin_is_refused(client) -> None:
    response = await client.get("/studies", headers={"Origin": FOREIGN})
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "--cors-origin https://evil.example" in await response.text()
    preflight = await client.options(
        "/studies", headers={"Origin": FOREIGN, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 403
    assert "Access-Control-Allow-Origin" not in preflight.headers


async def test_foreign_origin_cannot_delete(client) -> None:
    response = await client.delete("/studies/1.2.3", headers={"Origin": FOREIGN})
    assert response.status == 403


async def test_configured_origin_is_allowed(aiohttp_client, archive_dir: Path) -> None:
    client = await _client(aiohttp_client, archive_dir, cors_origins=("https://pacs.example/",))
    response = await client.get("/studies", headers={"Origin": "https://pacs.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://pacs.example"
    refused = await client.get("/studies", headers={"Origin": "https://other.example"})
    assert refused.status == 403


async def test_star_only_when_chosen(aiohttp_client, archive_dir: Path) -> None:
    client = await _client(aiohttp_client, archive_dir, cors_origins=("*",))
    response = await client.get("/studies", headers={"Origin": FOREIGN})
    assert response.status in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_no_origin_no_cors_headers(client) -> None:
    response = await client.get("/studies")
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_plain_options_without_preflight_headers_is_not_a_preflight(client) -> None:
    response = await client.options("/studies")
    assert response.status == 405


# Host guard ----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost:8042", "127.0.0.1", "127.1.2.3:99", "[::1]:8042"])
async def test_loopback_hosts_pass(client, host: str) -> None:
    response = await client.get("/studies", headers={"Host": host})
    assert response.status in (200, 204)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8042", "192.168.1.5:8042"])
async def test_rebinding_host_is_refused(client, host: str) -> None:
    response = await client.get("/studies", headers={"Host": host})
    assert response.status == 421
    assert "DNS rebinding" in await response.text()
    preflight = await client.options(
        "/studies",
        headers={"Host": host, "Origin": VIEWER, "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status == 421


async def test_no_host_guard_on_network_address(aiohttp_client, archive_dir: Path) -> None:
    client = await _client(aiohttp_client, archive_dir, host="0.0.0.0", token=TOKEN)
    response = await client.get(
        "/studies", headers={"Host": "mybox.lan:8042", "Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status in (200, 204)


def test_loopback_names() -> None:
    assert all(map(is_loopback_address, ["127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback_address, ["0.0.0.0", "10.0.0.1", "evil.example", "::"]))
    assert host_name("[::1]:8042") == "::1"
    assert host_name("localhost:1") == "localhost"
    assert host_name("127.0.0.1") == "127.0.0.1"


# token ---------------------------------------------------------------------------------------


async def test_token_off_needs_no_authorization(client) -> None:
    assert (await client.get("/studies")).status in (200, 204)


async def test_token_required_when_set(aiohttp_client, archive_dir: Path) -> None:
    client = await _client(aiohttp_client, archive_dir, token=TOKEN)
    missing = await client.get("/studies")
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = await client.get("/studies", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    basic = await client.get("/studies", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status == 401
    right = await client.get("/studies", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status in (200, 204)
    also_stow = await client.post("/studies", data=b"x", headers={"Content-Type": "text/plain"})
    assert also_stow.status == 401


async def test_preflight_needs_no_token(aiohttp_client, archive_dir: Path) -> None:
    client = await _client(aiohttp_client, archive_dir, token=TOKEN)
    preflight = await client.options(
        "/v1/studies",
        headers={
            "Origin": VIEWER,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status == 204
    refused = await client.get("/v1/studies", headers={"Origin": VIEWER})
    assert refused.status == 401
    assert refused.headers["Access-Control-Allow-Origin"] == VIEWER


# the command line ------------------------------------------------------------------------------


def test_network_address_without_token_refuses_to_start(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["serve", str(tmp_path / "a"), "--host", "0.0.0.0"], standalone_mode=False
    )
    assert result.exception is not None
    assert "--token" in str(result.exception)
    assert "--insecure" in str(result.exception)
