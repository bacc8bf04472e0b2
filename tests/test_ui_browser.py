"""The pages (studies, study, quick viewer) in a real headless Chromium against a live
localdicom: search, thumbnails, frames drawn by the server, wheel and window drag, a folder
upload, delete to the trash and restore from the Trash page, the ZIP download links, and the
cookie login of ``--token``.

What a page shows is compared with pydicom's reading of the files stored, never with the
server's own answers. Screenshots of every page go to $LOCALDICOM_SCREENSHOTS when set (CI
keeps them as artifacts), else to the test run's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet

from tests.helpers import (
    SAMPLES,
    SERIES_SQUARE_TRIANGLE,
    SOP_RED_TRIANGLE,
    STUDY_UID,
    free_port,
    write_series,
)
from tests.helpers.browser import (
    TIMEOUT_MS,
    Problems,
    chromium,
    missing_browser,
    require_browser,
    screen_pixels,
)
from tests.helpers.corpus import pydicom_file
from tests.helpers.live import LiveServer, request, stow_file

pytestmark = [pytest.mark.external, pytest.mark.slow]

CT = "693_J2KR.dcm"  # pydicom-data: a 512x512 CT slice, JPEG 2000 lossless
MULTI_FRAME = "emri_small.dcm"  # pydicom's test files: an MR of 10 frames
TOKEN = "ui-test-token"


@pytest.fixture(autouse=True)
def _browser_tools() -> None:
    require_browser(missing_browser())


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    archive = tmp_path_factory.mktemp("ui") / "archive"
    live = LiveServer(archive, free_port(), extra_args=("--samples",))
    live.start()
    for name in (CT, MULTI_FRAME):
        assert stow_file(live.url, pydicom_file(name)).status == 200
    yield live
    live.stop()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = os.environ.get("LOCALDICOM_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
async def page(server: LiveServer):
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.problems = Problems(page)
        yield page


def uids(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def viewer_url(server: LiveServer, path: Path) -> str:
    study, series, _ = uids(path)
    return f"{server.url}/ui/studies/{study}/series/{series}"


async def canvas_pixels(page) -> np.ndarray:
    return screen_pixels(await page.locator("#image").screenshot())


async def thumbnails_loaded(page) -> None:
    """Wait for the study page's thumbnails: leaving the page would abort them, a problem
    the page reports."""
    await page.wait_for_function(
        "[...document.querySelectorAll('#series img')].every(i => i.complete)"
    )


async def drawn(page, count: int = 1) -> None:
    """Wait until the viewer has drawn ``count`` images."""
    await page.wait_for_function(f"(window.quickViewer && window.quickViewer.drawn) >= {count}")


async def test_search_narrows_the_list(server: LiveServer, page, screenshots: Path) -> None:
    await page.goto(f"{server.url}/")
    rows = page.locator("#studies tbody tr")
    await page.wait_for_function("document.querySelectorAll('#studies tbody tr').length >= 3")
    everything = await rows.count()
    await page.get_by_label("Patient name").fill("anony")
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_function("document.querySelectorAll('#studies tbody tr').length === 1")
    assert "PatientName=anony" in page.url
    name = pydicom.dcmread(SAMPLES / "red-triangle.dcm").PatientName
    assert await rows.first.locator("a").first.inner_text() == str(name).replace("^", " ")
    assert everything > 1
    assert (await page.locator("#count").inner_text()).startswith("1 study")
    await page.screenshot(path=screenshots / "studies.png", full_page=True)
    assert not page.problems.seen, page.problems.seen


async def test_sorting_by_a_column(server: LiveServer, page) -> None:
    await page.goto(f"{server.url}/?sort=PatientID")
    await page.wait_for_function("document.querySelectorAll('#studies tbody tr').length >= 3")
    shown = await page.locator("#studies tbody tr td:nth-child(3)").all_inner_texts()
    present = sorted((text for text in shown if text), key=str.casefold)
    empty = [text for text in shown if not text]  # last, in either direction
    assert shown == present + empty
    await page.get_by_role("button", name="Patient ID").click()
    await page.wait_for_url("**sort=-PatientID**")
    # the header turns as soon as it is clicked; the rows once the new page of studies is in
    await page.wait_for_function(
        "first => document.querySelector('th[data-sort=PatientID]').ariaSort === 'descending'"
        " && document.querySelector('#studies tbody tr td:nth-child(3)').innerText === first",
        arg=present[-1],
    )
    backwards = await page.locator("#studies tbody tr td:nth-child(3)").all_inner_texts()
    assert backwards == present[::-1] + empty


async def test_study_page_shows_each_series_with_a_thumbnail(
    server: LiveServer, page, screenshots: Path
) -> None:
    series = {uids(path)[1] for path in SAMPLES.glob("*.dcm")}
    await page.goto(f"{server.url}/ui/studies/{STUDY_UID}")
    await page.locator('body[data-loaded="true"]').wait_for()
    cards = page.locator("#series li")
    assert await cards.count() == len(series)
    assert {await card.get_attribute("data-series-uid") for card in await cards.all()} == series
    for card in await cards.all():
        image = card.locator("img")
        await page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=await image.element_handle()
        )
        shown = screen_pixels(await image.screenshot())
        assert shown.max() > 100 and shown.std() > 10, "a blank thumbnail"
    # no --viewer: no OHIF button (the [hidden] attribute wins over the buttons' style)
    assert not await page.get_by_role("link", name="Open in OHIF").is_visible()
    assert await page.get_by_role("link", name="Download ZIP").is_visible()
    await page.screenshot(path=screenshots / "study.png", full_page=True)
    assert not page.problems.seen, page.problems.seen


async def test_quick_viewer_shows_the_red_triangle_red(
    server: LiveServer, page, screenshots: Path
) -> None:
    """The series holds the green square and the red triangle, in InstanceNumber order."""
    files = [SAMPLES / "green-square.dcm", SAMPLES / "red-triangle.dcm"]
    ordered = sorted(files, key=lambda path: int(pydicom.dcmread(path).InstanceNumber))
    position = [uids(path)[2] for path in ordered].index(SOP_RED_TRIANGLE) + 1
    url = f"{server.url}/ui/studies/{STUDY_UID}/series/{SERIES_SQUARE_TRIANGLE}"
    await page.goto(f"{url}?slice={position}")
    await drawn(page)
    shown = await canvas_pixels(page)
    red = (shown[..., 0] > 180) & (shown[..., 1] < 60) & (shown[..., 2] < 60)
    assert red.mean() > 0.05, f"red fraction {red.mean():.4f}"
    await page.locator("#tags tbody tr").first.wait_for()
    await page.get_by_label("Search the header").fill("sopinstanceuid")
    visible = page.locator("#tags tbody tr:not([hidden])")
    assert SOP_RED_TRIANGLE in await visible.first.inner_text()
    await page.screenshot(path=screenshots / "viewer-red-triangle.png")
    assert not page.problems.seen, page.problems.seen


async def test_quick_viewer_ct_and_window_drag(server: LiveServer, page, screenshots: Path) -> None:
    path = pydicom_file(CT)
    assert pydicom.dcmread(path).pixel_array.std() > 0  # pydicom: the CT is not uniform
    await page.goto(viewer_url(server, path))
    await drawn(page)
    before = await canvas_pixels(page)
    assert before.std() > 5, "the CT is drawn uniform"
    stage = await page.locator("#stage").bounding_box()
    x, y = stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2
    await page.mouse.move(x, y)
    await page.mouse.down()
    await page.mouse.move(x + 200, y + 120, steps=8)
    await page.mouse.up()
    await page.wait_for_function("document.querySelector('#image').dataset.window !== 'own'")
    await page.wait_for_timeout(300)  # the last window asked is drawn
    await drawn(page, 2)
    after = await canvas_pixels(page)
    assert np.abs(after - before).mean() > 2, "the window drag left the image as it was"
    await page.screenshot(path=screenshots / "viewer-ct.png")
    assert not page.problems.seen, page.problems.seen


async def test_quick_viewer_wheel_steps_through_frames(server: LiveServer, page) -> None:
    path = pydicom_file(MULTI_FRAME)
    frames = pydicom.dcmread(path).pixel_array
    assert not np.array_equal(frames[0], frames[1])  # pydicom: frames 1 and 2 differ
    await page.goto(viewer_url(server, path))
    await drawn(page)
    assert await page.locator("#position").inner_text() == f"1 / {len(frames)} (frame 1)"
    first = await canvas_pixels(page)
    await page.locator("#stage").hover()
    await page.mouse.wheel(0, 100)
    await page.wait_for_function("document.querySelector('#image').dataset.frame === '1'")
    second = await canvas_pixels(page)
    assert np.abs(second - first).mean() > 1, "a wheel step showed the same image"
    await page.keyboard.press("End")
    await page.wait_for_function(
        f"document.querySelector('#image').dataset.frame === '{len(frames) - 1}'"
    )
    # the URL follows once the wheel and keys rest (viewer.js: remember(), after 300 ms)
    await page.wait_for_url(re.compile(rf"[?&]slice={len(frames)}(&|$)"))
    assert not page.problems.seen, page.problems.seen


async def test_upload_of_a_folder(
    server: LiveServer, page, tmp_path: Path, screenshots: Path
) -> None:
    folder = tmp_path / "upload"
    files = write_series(folder, "ui-upload", "ui-upload-series", 50, size=64)
    study, series, _ = uids(files[0])
    await page.goto(f"{server.url}/")
    await page.locator("#folder").set_input_files(folder)
    await page.locator('#upload-status[data-done="true"]').wait_for()
    assert (await page.locator("#upload-status").inner_text()).startswith("50 of 50 files stored")
    await page.screenshot(path=screenshots / "studies-after-upload.png", full_page=True)
    stored = request(f"{server.url}/studies/{study}/series/{series}/instances")
    assert stored.status == 200
    assert {item["00080018"]["Value"][0] for item in json.loads(stored.body)} == {
        uids(path)[2] for path in files
    }
    assert not page.problems.seen, page.problems.seen


async def test_delete_to_the_trash_and_restore(server: LiveServer, page, screenshots: Path) -> None:
    path = pydicom_file("CT_small.dcm")
    assert stow_file(server.url, path).status == 200
    study, _, sop = uids(path)
    await page.goto(f"{server.url}/ui/studies/{study}")
    await page.locator('body[data-loaded="true"]').wait_for()
    await thumbnails_loaded(page)
    questions: list[str] = []

    async def confirm(dialog) -> None:
        questions.append(dialog.message)
        await dialog.accept()

    page.on("dialog", confirm)
    await page.get_by_role("button", name="Move to the trash…").click()
    await page.get_by_text("Moved to the trash").wait_for()
    assert "restore it from the Trash page" in questions[0]
    assert not await page.get_by_role("button", name="Move to the trash…").is_visible()
    assert json.loads(request(f"{server.url}/studies?StudyInstanceUID={study}").body) == []
    await page.screenshot(path=screenshots / "study-moved-to-trash.png", full_page=True)
    await page.get_by_role("link", name="Trash page").click()
    await page.wait_for_url(f"{server.url}/ui/trash")
    await page.locator('body[data-loaded="true"]').wait_for()
    row = page.locator("#entries tr", has_text=study)
    assert "delete" in await row.inner_text()
    await page.screenshot(path=screenshots / "trash.png", full_page=True)
    await row.get_by_role("button", name="Restore").click()
    await page.get_by_text("1 instance restored").wait_for()
    await row.wait_for(state="detached")
    found = request(f"{server.url}/studies/{study}/instances")
    assert [item["00080018"]["Value"][0] for item in json.loads(found.body)] == [sop]
    assert not page.problems.seen, page.problems.seen


async def test_empty_trash(server: LiveServer, page, screenshots: Path) -> None:
    path = SAMPLES / "blue-circle.dcm"
    assert stow_file(server.url, path).status == 200
    study, series, sop = uids(path)
    url = f"{server.url}/studies/{study}/series/{series}/instances/{sop}"
    assert request(url, method="DELETE").status == 204
    await page.goto(f"{server.url}/ui/trash")
    await page.locator('body[data-loaded="true"]').wait_for()
    await page.locator("#entries tr", has_text=study).wait_for()
    page.on("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Empty trash…").click()
    await page.get_by_text("Trash: empty").wait_for()
    await page.screenshot(path=screenshots / "trash-emptied.png", full_page=True)
    assert json.loads(request(f"{server.url}/ui/api/trash").body)["entries"] == []
    assert not page.problems.seen, page.problems.seen


async def test_download_zip_link(server: LiveServer, page, tmp_path: Path) -> None:
    """The study page's links save the stored files, byte for byte (PS3.18 8.6.1.3), and a
    DICOMDIR for a CD (PS3.10 8.6)."""
    path = pydicom_file(CT)
    study, _, sop = uids(path)
    await page.goto(f"{server.url}/ui/studies/{study}")
    await page.locator('body[data-loaded="true"]').wait_for()
    async with page.expect_download() as started:
        await page.get_by_role("link", name="Download ZIP").click()
    download = await started.value
    assert download.suggested_filename.endswith(".zip")
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        assert [archive.read(name) for name in archive.namelist()] == [path.read_bytes()]
    async with page.expect_download() as started:
        await page.get_by_role("link", name="ZIP for a CD (DICOMDIR)").click()
    await (await started.value).save_as(tmp_path / "cd.zip")
    with zipfile.ZipFile(tmp_path / "cd.zip") as archive:
        assert "DICOMDIR" in archive.namelist()
        archive.extractall(tmp_path / "cd")
    fileset = FileSet(tmp_path / "cd" / "DICOMDIR")
    assert [instance.SOPInstanceUID for instance in fileset] == [sop]
    await thumbnails_loaded(page)
    await page.goto(viewer_url(server, path))
    await drawn(page)
    async with page.expect_download() as started:
        await page.get_by_role("link", name="Series as ZIP").click()
    await (await started.value).save_as(tmp_path / "series.zip")
    with zipfile.ZipFile(tmp_path / "series.zip") as archive:
        assert [archive.read(name) for name in archive.namelist()] == [path.read_bytes()]
    assert not page.problems.seen, page.problems.seen


async def test_pages_work_with_a_token(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "archive", free_port(), extra_args=("--samples",))
    live.extra_args += ("--token", TOKEN)
    live.start()
    try:
        async with chromium() as browser:
            context = await browser.new_context()  # one cookie jar for both pages
            viewer = await context.new_page()
            viewer.set_default_timeout(TIMEOUT_MS)
            problems = Problems(viewer)
            url = f"{live.url}/ui/studies/{STUDY_UID}/series/{SERIES_SQUARE_TRIANGLE}"
            await viewer.goto(f"{url}?token={TOKEN}")
            await drawn(viewer)
            assert viewer.url.split("?")[0] == url and "token" not in viewer.url
            assert not problems.seen, problems.seen
            home = await context.new_page()  # the viewer's fetches go on: not aborted
            home.set_default_timeout(TIMEOUT_MS)
            problems = Problems(home)
            await home.goto(f"{live.url}/")
            await home.locator(f'tr[data-study-uid="{STUDY_UID}"]').wait_for()
            assert not problems.seen, problems.seen
            # the thumbnails done first: leaving the page would abort them
            await home.wait_for_load_state("networkidle")
            await home.get_by_role("link", name="Trash").click()  # its POSTs use the cookie
            await home.get_by_text("Trash: empty").wait_for()
            emptied = await home.evaluate(
                """fetch("ui/api/trash/empty", {method: "POST", body: "{}",
                    headers: {"Content-Type": "application/json"}}).then(r => r.status)"""
            )
            assert emptied == 200
            assert not problems.seen, problems.seen
    finally:
        live.stop()
