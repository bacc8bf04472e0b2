"""The home page and the /viewer/ mount, over HTTP (the browser tests are in
tests/test_ohif_browser.py). The viewer tests use a fake OHIF build of two files with the
same root-relative URLs and webpack runtime as the real one."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from localdicom.app import make_app
from localdicom.web.viewer import ohif_config
from tests.helpers import REPOSITORY, app_settings

FAKE_INDEX = (
    "<!doctype html><html><head><script>window.PUBLIC_URL = '/';</script>"
    '<link rel="manifest" href="/manifest.json"/></head><body>'
    '<script src="/app-config.js"></script><script src="/app.bundle.abc.js"></script>'
    "</body></html>"
)
FAKE_BUNDLE = 'var x = 1;\n__webpack_require__.p = "/";\n'


@pytest.fixture
def fake_ohif(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text(FAKE_INDEX)
    (dist / "app.bundle.abc.js").write_text(FAKE_BUNDLE)
    (dist / "manifest.json").write_text("{}")
    return dist


async def test_home_page_is_served(client) -> None:
    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert 'src="static/home.js"' in page
    assert 'src="static/upload.js"' in page
    assert 'name="localdicom-viewer" content=""' in page
    script = await client.get("/static/home.js")
    assert script.status == 200
    text = await script.text()
    assert "includefield" in text and "orderby" in text and "X-Total-Count" in text
    assert "/thumbnail" in text
    upload = await (await client.get("/static/upload.js")).text()
    assert '"application/dicom"' in upload


async def test_home_page_links_to_the_viewer_when_served(
    aiohttp_client, archive_dir: Path, fake_ohif: Path
) -> None:
    client = await aiohttp_client(make_app(app_settings(archive_dir, viewer=fake_ohif)))
    page = await (await client.get("/")).text()
    assert 'name="localdicom-viewer" content="/viewer/"' in page


async def test_home_page_sees_what_it_needs(aiohttp_client, archive_dir: Path) -> None:
    """The QIDO request home.js makes answers every column it shows."""
    client = await aiohttp_client(make_app(app_settings(archive_dir, samples=True)))
    fields = "includefield=00081030,00080061,00201206,00201208"
    response = await client.get(
        f"/studies?{fields}&limit=50&offset=0&orderby=-StudyDate,-StudyTime"
    )
    (study,) = await response.json()
    assert response.headers["X-Total-Count"] == "1"
    for tag in ("0020000D", "00100010", "00100020", "00080020", "00080061", "00201206"):
        assert tag in study
    assert study["00201208"]["Value"] == [3]
    uid = study["0020000D"]["Value"][0]
    thumbnail = await client.get(f"/studies/{uid}/thumbnail")
    assert thumbnail.status == 200
    assert thumbnail.content_type == "image/jpeg"


async def test_viewer_is_rewritten_for_its_mount(
    aiohttp_client, archive_dir: Path, fake_ohif: Path
) -> None:
    client = await aiohttp_client(make_app(app_settings(archive_dir, viewer=fake_ohif)))
    redirect = await client.get("/viewer", allow_redirects=False)
    assert redirect.headers["Location"] == "/viewer/"
    index = await client.get("/viewer/")
    page = await index.text()
    assert "window.PUBLIC_URL = '/viewer/'" in page
    assert 'src="/viewer/app.bundle.abc.js"' in page
    assert 'href="/viewer/manifest.json"' in page
    assert index.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    route = await client.get("/viewer/viewer?StudyInstanceUIDs=1.2.3")
    assert await route.text() == page
    bundle = await (await client.get("/viewer/app.bundle.abc.js")).text()
    assert '__webpack_require__.p = "/viewer/";' in bundle
    config = await client.get("/viewer/app-config.js")
    assert "window.location.origin" in await config.text()
    escape = await client.get("/viewer/..%2F..%2Fetc%2Fpasswd")
    assert await escape.text() == page


@pytest.mark.external
def test_app_config_is_valid_javascript(tmp_path: Path) -> None:
    node = subprocess.run(["which", "node"], capture_output=True, text=True).stdout.strip()
    if not node:
        pytest.skip("node is not installed")
    script = tmp_path / "check.js"
    script.write_text(
        "global.window = {location: {origin: 'http://127.0.0.1:8042'}};\n"
        + ohif_config("window.location.origin")
        + "\nconst c = window.config.dataSources[0].configuration;\n"
        "if (c.qidoRoot !== 'http://127.0.0.1:8042' || c.wadoUriRoot.slice(-5) !== '/wado'"
        " || !c.supportsWildcard) process.exit(1);\n"
    )
    assert subprocess.run([node, str(script)]).returncode == 0


def test_viewer_option_refuses_a_folder_that_is_not_ohif(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from localdicom.cli import main

    result = CliRunner().invoke(
        main, ["serve", str(tmp_path / "a"), "--viewer", str(tmp_path)], standalone_mode=False
    )
    assert result.exception is not None
    assert "@ohif/app" in str(result.exception)


@pytest.mark.slow
def test_static_files_are_in_the_wheel(tmp_path: Path) -> None:
    """hatchling's `packages = ["localdicom"]` takes localdicom/static along."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), "."],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {build.stderr[-300:]}")
    (wheel,) = tmp_path.glob("localdicom-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("index.html", "study.html", "series.html", "ui.css", "common.js", "home.js"):
        assert f"localdicom/static/{name}" in names
    for name in ("upload.js", "study.js", "viewer.js"):
        assert f"localdicom/static/{name}" in names
