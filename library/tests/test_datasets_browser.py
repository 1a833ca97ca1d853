"""A new user brings their own images: Debian's chromium (Playwright) against a real BuildX server.

Uploads a zip of three classes of generated PNGs in small chunks (watching the progress), reads the
dataset's page, builds a design on it in the editor (the input shape and the head follow the dataset),
trains it to better than chance, predicts an image of one class on the predict page and downloads the
bundle. Then the same flow, to the end, in Korean at tablet size (1024x1366).
"""

from __future__ import annotations

import io
import re
import uuid
import zipfile

import pytest
from playwright.sync_api import expect

from buildx.testing.browser import chromium_browser, serve_on_test_database
from library.tests.conftest import COLOURS, class_png, three_classes, zip_of

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PASSWORD = "a-long-beginner-password-42"


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    env = {
        "BUILDX_DATA_DIR": str(tmp / "data"),
        "MEDIA_ROOT": str(tmp / "media"),
        "DATASET_CHUNK_BYTES": str(16 * 1024),  # several chunks even for a small zip: the progress moves
        "BUILDX_SANDBOX_THREADS": "1",
    }
    with serve_on_test_database(tmp=tmp, django_db_blocker=django_db_blocker, env=env) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:
        yield chromium


def _sign_up(page, base: str, email: str) -> None:
    page.goto(f"{base}/accounts/signup/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/dashboard/$"))


def _csrf(context) -> str:
    return next(c["value"] for c in context.cookies() if c["name"] == "csrftoken")


def _settle(page) -> None:
    page.wait_for_timeout(50)
    page.wait_for_selector("#editor[data-validating=false]")


def _upload_and_design(page, context, base: str, tmp_path, *, ko: bool) -> int:
    """Sign up, upload the zip, read the dataset's page, design on it; returns the design's id."""
    _sign_up(page, base, f"images-{'ko' if ko else 'en'}-{uuid.uuid4().hex[:8]}@example.com")
    path = tmp_path / "colours.zip"
    path.write_bytes(zip_of(three_classes(per_class=30, size=16)))
    assert path.stat().st_size > 3 * 16 * 1024

    page.goto(f"{base}/datasets/")
    page.get_by_role("heading", name="데이터셋" if ko else "Datasets", exact=True).wait_for()
    page.fill("#upload-name", "Colours")
    page.set_input_files("#upload-file", str(path))
    seen: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: seen.append(str(frame))))
    page.locator("#upload-submit").click()
    expect(page.locator("#upload-status")).to_be_visible()
    expect(page.locator("#upload-text")).to_contain_text("%" if not ko else "%", timeout=30_000)
    page.wait_for_url(re.compile(r".*/datasets/\d+/$"), timeout=120_000)
    assert any("dataset.status" in frame for frame in seen)  # the check's progress came over the socket
    dataset_id = int(page.url.rstrip("/").rsplit("/", 1)[1])

    # The dataset's page: counts as a chart, samples, shape, split and Normalize's numbers.
    expect(page.locator("#dataset-status")).to_have_text("준비됨" if ko else "Ready")
    assert page.locator("#input-shape").inner_text() == "3×16×16"
    rows = page.locator("#counts-chart .bar-row")
    expect(rows).to_have_count(3)
    texts = rows.all_inner_texts()
    assert [
        (name in text, "30" in text) for name, text in zip(("blue", "green", "red"), texts, strict=True)
    ] == [(True, True)] * 3, texts
    samples = page.locator("#dataset-samples")
    samples.scroll_into_view_if_needed()
    page.wait_for_function("() => document.getElementById('dataset-samples').naturalWidth > 0")
    assert page.locator("#mean-std").inner_text().count(",") >= 4

    # A design on it: the digits starter, switched to this dataset in the editor's picker.
    created = page.request.post(
        f"{base}/api/v1/designs/",
        data={"name": "Colour net", "starter": "tiny_cnn_digits"},
        headers={"X-CSRFToken": _csrf(context)},
    )
    assert created.status == 201, created.text()
    design = created.json()["id"]
    page.goto(f"{base}/designs/{design}/")
    page.wait_for_selector("#editor[data-ready=true]")
    _settle(page)
    options = page.locator("#dataset option").all_inner_texts()
    assert any(o.startswith("Colours (3×16×16, 3)") for o in options), options
    assert any(("설치되지 않" if ko else "not installed on this server") in o for o in options), options
    page.select_option("#dataset", f"upload-{dataset_id}")
    _settle(page)
    page.wait_for_selector("#summary.summary-ok")
    first = page.locator("#column > .block").first
    assert first.locator(".block-shape").inner_text().endswith("×16×16")  # the input follows the dataset
    last = page.locator("#column > .block").last
    assert last.get_attribute("data-type") == "Linear"
    assert last.locator(".block-shape").inner_text() == "3"  # so does the head: 3 classes, not 10
    for name, value in (("epochs", "4"), ("batch_size", "16"), ("learning_rate", "0.01")):
        field = page.locator(f'#hyperparameters [data-param="{name}"] input')
        field.fill(value)
        field.press("Tab")
    _settle(page)
    page.locator("#save").click()
    page.wait_for_selector("#editor[data-saved-version='2']")
    page.locator("#tab-code").click()
    expect(page.locator("#code")).to_contain_text(f'DATASET = "upload-{dataset_id}"', timeout=15_000)
    page.locator("#train").click()
    page.wait_for_url(re.compile(r".*/runs/\d+/$"), timeout=30_000)
    return int(page.url.rstrip("/").rsplit("/", 1)[1])


def _train_predict_download(page, context, base: str, run_id: int, tmp_path, *, ko: bool) -> None:
    """The run trains to the end, better than chance; the predict page names the class of a green image;
    the bundle downloads with the model card and the way back to her own dataset."""
    expect(page.locator("#run-status")).to_have_text("성공" if ko else "Succeeded", timeout=600_000)
    run = page.request.get(f"{base}/api/v1/runs/{run_id}/").json()
    assert run["metrics"]["accuracy"] > 0.6  # chance is 1/3

    # A page of its own: the run page may still be reloading itself after the run ended.
    predict_page = context.new_page()
    predict_page.goto(f"{base}/runs/{run_id}/predict/")
    green = tmp_path / "green.png"
    green.write_bytes(class_png(COLOURS["green"], 7, 16))  # a seed none of the uploaded images has
    predict_page.set_input_files("#predict-file", str(green))
    bars = predict_page.locator("#predict-bars li")
    expect(bars).to_have_count(3)
    expect(bars.first.locator(".predict-label")).to_have_text("green")

    with predict_page.expect_download() as download:
        predict_page.locator("a[href$='/export/bundle/']").first.click()
    bundle = zipfile.ZipFile(io.BytesIO(open(download.value.path(), "rb").read()))
    assert any(n.endswith("MODEL_CARD.md") for n in bundle.namelist())
    card = next(bundle.read(n).decode() for n in bundle.namelist() if n.endswith("MODEL_CARD.md"))
    assert "Colours" in card and "red 30" in card
    readme = next(bundle.read(n).decode() for n in bundle.namelist() if n.endswith("README.md"))
    assert (
        "/export/" in readme and "./dataset" in readme
    )  # how to get her own dataset back, to train anywhere


def test_a_new_user_uploads_images_designs_trains_predicts_and_downloads(
    server, browser, transactional_db, tmp_path
):
    context = browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    run_id = _upload_and_design(page, context, server, tmp_path, ko=False)
    _train_predict_download(page, context, server, run_id, tmp_path, ko=False)
    context.close()
    assert errors == []


def test_the_same_flow_in_korean_at_tablet_size(server, browser, transactional_db, tmp_path):
    context = browser.new_context(viewport={"width": 1024, "height": 1366}, locale="ko-KR")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    run_id = _upload_and_design(page, context, server, tmp_path, ko=True)
    assert page.locator("html").get_attribute("lang") == "ko"
    assert "로그아웃" in page.locator("header").inner_text()
    _train_predict_download(page, context, server, run_id, tmp_path, ko=True)
    context.close()
    assert errors == []
