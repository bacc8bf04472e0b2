"""CORS, the DNS-rebinding Host guard and the access token, through the in-process app."""

from __future__ import annotations

import base64
import http.cookiejar
import json
import logging
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from click.testing import CliRunner

from localdicom.app import make_app
from localdicom.cli import main
from localdicom.serving import RequestLog
from localdicom.web.security import COOKIE, host_name, is_loopback_address
from tests.helpers import STUDY_UID, app_settings, free_port

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


def _serve(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "localdicom", "serve", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("service, option", [("HTTP", "--port"), ("DICOM", "--dicom-port")])
def test_a_port_in_use_is_a_one_line_error(tmp_path: Path, service: str, option: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        ports = [option, port] if service == "HTTP" else ["--port", "0", option, port]
        result = _serve(str(tmp_path / "archive"), *ports)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"Error: cannot listen for {service} on 127.0.0.1:{port}: address")
    assert last.endswith(f"Choose another port with {option}")


def test_an_archive_that_cannot_be_created_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    result = _serve(str(tmp_path / "a-file" / "archive"), "--port", "0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: the server cannot start: [Errno 20]")


# HTTP Basic beside Bearer (RFC 7617): the token as the password, any user name ----------------


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("user", ["", "monai", "orthanc", "with space", "\u00e9l\u00e8ve"])
async def test_basic_with_the_token_as_password_is_accepted(
    aiohttp_client, archive_dir: Path, user: str
) -> None:
    client = await _client(aiohttp_client, archive_dir, token=TOKEN)
    response = await client.get("/studies", headers={"Authorization": _basic(user, TOKEN)})
    assert response.status in (200, 204), await response.text()


@pytest.mark.parametrize(
    "authorization",
    [
        _basic("user", "wrong"),
        _basic(TOKEN, ""),  # the token as the user name is not the password
        _basic("user", TOKEN + "x"),
        "Basic " + base64.b64encode(TOKEN.encode()).decode(),  # no colon: no password
        f"Basic {TOKEN}",  # not base64
        "Basic !!!",
        "Basic " + base64.b64encode(b"user:\xff\xfe").decode(),  # not UTF-8
        "Digest " + TOKEN,
    ],
)
async def test_basic_with_another_password_is_refused(
    aiohttp_client, archive_dir: Path, authorization: str
) -> None:
    client = await _client(aiohttp_client, archive_dir, token=TOKEN)
    response = await client.get("/studies", headers={"Authorization": authorization})
    assert response.status == 401
    challenges = response.headers["WWW-Authenticate"]
    assert challenges.startswith("Bearer") and 'Basic realm="localdicom"' in challenges


# ?token= on a page URL: an HttpOnly, SameSite=Strict cookie for the browser --------------------


async def test_token_in_a_page_url_becomes_a_cookie_and_is_dropped_from_the_url(
    aiohttp_client, archive_dir: Path
) -> None:
    client = await _client(aiohttp_client, archive_dir, token=TOKEN)
    first = await client.get(f"/?token={TOKEN}&x=1", allow_redirects=False)
    assert first.status == 303
    assert first.headers["Location"] == "./?x=1"
    assert first.headers["Cache-Control"] == "no-store"
    cookie = first.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path=/", "samesite=strict"} <= attributes
    assert "secure" not in attributes  # plain http: a Secure cookie would never come back
    assert TOKEN not in cookie  # derived from the token, not the token
    page = await client.get("/")
    assert page.status == 200
    assert "text/html" in page.headers["Content-Type"]
    assert (await client.get("/studies")).status in (200, 204)


async def test_the_redirect_keeps_the_path_behind_a_proxy_prefix(
    aiohttp_client, archive_dir: Path
) -> None:
    client = await _client(aiohttp_client, archive_dir, token=TOKEN)
    response = await client.get(
        f"/studies?token={TOKEN}",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/pacs"},
        allow_redirects=False,
    )
    assert response.headers["Location"] == "./studies"  # relative: /pacs/studies for the client
    assert "secure" in response.headers["Set-Cookie"].lower()


async def test_a_wrong_token_in_the_url_sets_no_cookie(aiohttp_client, archive_dir: Path) -> None:
    client = await _client(aiohttp_client, archive_dir, token=TOKEN)
    response = await client.get("/?token=nope", allow_redirects=False)
    assert response.status == 401
    assert "Set-Cookie" not in response.headers
    assert (await client.get("/studies")).status == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": VIEWER},  # a page on localhost:3000 is the same *site* as the server
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
async def test_the_cookie_authorises_only_the_servers_own_pages(
    aiohttp_client, archive_dir: Path, headers: dict[str, str]
) -> None:
    client = await _client(aiohttp_client, archive_dir, token=TOKEN)
    assert (await client.get(f"/?token={TOKEN}")).status == 200
    own = await client.post(
        "/studies",
        data=b"x",
        headers={
            "Content-Type": "text/plain",
            "Origin": str(client.make_url("")).rstrip("/"),
            "Sec-Fetch-Site": "same-origin",
        },
    )
    assert own.status == 415  # past the token check: refused for what it sends
    other = await client.post(
        "/studies", data=b"x", headers={"Content-Type": "text/plain", **headers}
    )
    assert other.status == 401


# with a live server: the link printed at start, curl, urllib ---------------------------------


@pytest.fixture
def token_server(archive_dir: Path) -> Iterator[tuple[str, Path]]:
    """``localdicom serve --samples --token TOKEN``; its URL and log."""
    port = free_port()
    log = archive_dir.parent / "server.log"
    command = [sys.executable, "-m", "localdicom", "serve", str(archive_dir), "--port", str(port)]
    command += ["--no-fsync", "--samples", "--token", TOKEN]
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        # the samples stored, and the start line with its log-in link (written after them)
        while not all(line in log.read_text() for line in ("samples:", "in a browser:")):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield url, log
    finally:
        process.terminate()
        process.wait(timeout=10)


def _study_uids(body: bytes) -> list[str]:
    return [study["0020000D"]["Value"][0] for study in json.loads(body)]


def test_curl_sends_basic(token_server) -> None:
    url, _ = token_server
    command = ["curl", "-s", "-w", "\n%{http_code}", f"{url}/studies"]
    refused = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert refused.endswith("401")
    answer = subprocess.run(
        [*command, "-u", f"monai:{TOKEN}"], capture_output=True, text=True, check=True
    ).stdout
    body, status = answer.rsplit("\n", 1)
    assert status == "200"
    assert _study_uids(body.encode()) == [STUDY_UID]


def test_urllib_answers_the_basic_challenge(token_server) -> None:
    """urllib's HTTPBasicAuthHandler sends credentials only after a 401 that asks for Basic."""
    url, _ = token_server
    passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    passwords.add_password(None, url, "anyone", TOKEN)
    opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(passwords))
    with opener.open(f"{url}/studies", timeout=30) as response:
        assert _study_uids(response.read()) == [STUDY_UID]


def test_the_printed_link_logs_a_browser_in(token_server) -> None:
    url, log = token_server
    (line,) = [line for line in log.read_text().splitlines() if "in a browser:" in line]
    link = line.split("in a browser: ", 1)[1].strip()
    assert link == f"{url}/?token={TOKEN}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}/", timeout=30)
    assert refused.value.code == 401
    cookies = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
    with browser.open(link, timeout=30) as page:
        assert page.url == f"{url}/"  # redirected: the token is out of the address bar
        assert b"<html" in page.read().lower()
    assert [cookie.name for cookie in cookies] == [COOKIE]
    with browser.open(f"{url}/studies", timeout=30) as response:
        assert _study_uids(response.read()) == [STUDY_UID]


def test_the_request_log_hides_a_token_in_the_query(caplog) -> None:
    """The log-in link's token never reaches the access log, which is shared more widely."""
    request = make_mocked_request("GET", f"/viewer/?token={TOKEN}&study={STUDY_UID}")
    log = RequestLog(logging.getLogger("test.access"), "")
    with caplog.at_level(logging.INFO, logger="test.access"):
        log.log(request, web.Response(status=303), 0.001)
    assert TOKEN not in caplog.text
    assert f"/viewer/?token=***&study={STUDY_UID} 303" in caplog.text
