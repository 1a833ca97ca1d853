"""The pages in Debian's chromium: our JavaScript runs under the CSP, and the browser reports no violation."""

from __future__ import annotations

import pytest
from playwright.sync_api import sync_playwright

from buildx.test import PASSWORD
from buildx.testing.browser import CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# Database work happens in fixtures set up before `page`: while Playwright's sync API is open, an
# event loop runs in this thread and the ORM (rightly) refuses to run there.


@pytest.fixture
def page():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.console_problems = []
        page.on(
            "console",
            lambda message: page.console_problems.append(message.text) if message.type == "error" else None,
        )
        yield page
        browser.close()


def test_the_language_switcher_works_without_a_button_and_nothing_breaks_the_csp(page, live_server):
    page.goto(live_server.url + "/")
    assert page.locator("h1").inner_text() == "Build your first neural network"
    # site.js hides the submit button and submits on change.
    assert "visually-hidden" in page.locator(".lang-submit").get_attribute("class")
    with page.expect_navigation():
        page.select_option("#lang-select", "ko")
    assert page.locator("h1").inner_text() == "나의 첫 신경망 만들기"
    assert page.locator("html").get_attribute("lang") == "ko"
    for path in ("/accounts/login/", "/accounts/signup/", "/accounts/password/reset/"):
        page.goto(live_server.url + path)
    assert page.console_problems == []


@pytest.fixture
def alice_with_an_old_address(alice):
    from allauth.account.models import EmailAddress

    EmailAddress.objects.create(user=alice, email="alice.old@example.com", verified=False, primary=False)
    return alice


def test_alice_logs_in_and_is_asked_before_removing_an_email_address(
    alice_with_an_old_address, live_server, page
):
    page.goto(live_server.url + "/accounts/login/")
    page.fill("input[name=login]", "alice@example.com")
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form.stack-form button[type=submit]")
    assert page.url.endswith("/dashboard/")

    page.goto(live_server.url + "/accounts/email/")
    page.check("input[value='alice.old@example.com']")
    questions = []
    page.on("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.click("button[name=action_remove]")
    assert questions == ["Do you really want to remove the selected email address?"]
    page.goto(live_server.url + "/accounts/email/")
    assert page.locator("input[value='alice.old@example.com']").count() == 1  # dismissed: kept
    assert page.console_problems == []
