"""A text for a language model through the datasets page: Debian's chromium (Playwright) against a real
BuildX server. The upload form's Kind switches to text (tokenizer and vocabulary instead of the image side),
the file goes up in chunks, the check's answer arrives over the WebSocket, and the dataset's page shows the
text's facts; in Korean, a file that is not UTF-8 is refused with the reason in Korean."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from library.tests.test_datasets_browser import PASSWORD, browser, server  # noqa: F401 - the fixtures
from library.tests.test_text_datasets import TEXT

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def upload_text(page, base: str, tmp_path, data: bytes, *, ko: bool, bpe: bool) -> None:
    page.goto(f"{base}/accounts/signup/")
    page.fill("input[name=email]", f"text-{'ko' if ko else 'en'}-{uuid.uuid4().hex[:8]}@example.com")
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/dashboard/$"))
    page.goto(f"{base}/datasets/")
    expect(page.locator("#upload-side")).to_be_visible()
    expect(page.locator("#upload-tokenizer")).to_be_hidden()
    page.select_option("#upload-kind", "text")
    expect(page.locator("#upload-side")).to_be_hidden()  # the image side gives way to the tokenizer
    if bpe:
        page.select_option("#upload-tokenizer", "bpe")
        page.fill("#upload-vocab", "300")
    path = tmp_path / "corpus.txt"
    path.write_bytes(data)
    page.fill("#upload-name", "Sums")
    page.set_input_files("#upload-file", str(path))
    page.locator("#upload-submit").click()
    page.wait_for_url(re.compile(r".*/datasets/\d+/$"), timeout=120_000)


def test_a_user_uploads_a_text_with_a_bpe_tokenizer_and_reads_its_page(
    server,  # noqa: F811 - the imported fixture
    browser,  # noqa: F811 - the imported fixture
    transactional_db,
    tmp_path,
):
    context = browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    upload_text(page, server, tmp_path, TEXT.encode(), ko=False, bpe=True)
    expect(page.locator("#dataset-status")).to_have_text("Ready")
    expect(page.locator("#text-tokenizer")).to_have_text("byte-level BPE")
    assert re.fullmatch(r"(25[7-9]|2[6-9]\d|300) tokens", page.locator("#text-vocab").inner_text())
    expect(page.locator("#text-size")).to_have_text(f"{len(TEXT)} characters in 400 lines")
    expect(page.locator("#text-sample")).to_contain_text("0+1=1 안녕 BuildX")
    vocab = page.locator("#text-vocab").inner_text().split()[0]

    # The editor offers the text to a new language model, after the built-in ones; a head added on it
    # gives one score per token of its vocabulary.
    page.goto(f"{server}/designs/new/?task=language_model")
    page.wait_for_selector("#editor[data-ready=true]")
    option = page.locator("#dataset option", has_text="Sums")
    expect(option).to_have_count(1)
    assert page.locator("#dataset option").first.get_attribute("value") == "addition"
    page.select_option("#dataset", option.get_attribute("value"))
    page.wait_for_selector("#editor[data-validating=false]")
    page.locator('#palette .palette-item[data-new-type="Linear"] .palette-add').click()
    expect(page.locator('#column [data-param="out_features"] input')).to_have_value(vocab)
    context.close()
    assert errors == []


def test_in_korean_a_file_that_is_not_utf8_is_refused_with_the_reason(
    server,  # noqa: F811 - the imported fixture
    browser,  # noqa: F811 - the imported fixture
    transactional_db,
    tmp_path,
):
    context = browser.new_context(viewport={"width": 1024, "height": 1366}, locale="ko-KR")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    upload_text(page, server, tmp_path, "café au lait\n".encode("latin-1") * 300, ko=True, bpe=False)
    expect(page.locator("#dataset-problems")).to_contain_text("이 텍스트는 거절되었습니다")
    expect(page.locator("#dataset-problems")).to_contain_text("UTF-8 텍스트가 아닙니다: 3번째 바이트")
    context.close()
    assert errors == []
