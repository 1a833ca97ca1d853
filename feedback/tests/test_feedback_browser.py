"""The feedback panel in Debian's chromium: Apply a suggestion, follow to the new version, rate."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import expect, sync_playwright

from buildx.testing.browser import CHROMIUM_ARGS
from designs.models import DesignVersion
from feedback import services
from feedback.models import Feedback
from feedback.tests.test_feedback import finished_run

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_alice_applies_a_suggestion_from_the_run_page_and_rates_the_feedback(alice, live_server):
    run = finished_run(alice)
    services.feedback_diagnose(run=run)
    client = Client()
    client.force_login(alice)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.add_cookies(
                [{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}]
            )
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{live_server.url}/runs/{run.pk}/")

            finding = page.locator('#feedback .finding[data-code="overfitting"]')
            expect(finding).to_be_visible()
            finding.locator(".feedback-apply").first.click()
            expect(page.locator("#feedback-result")).to_contain_text("version 2")
            expect(page.locator("#feedback-editor-link")).to_have_attribute(
                "href", f"/designs/{run.design_version.design_id}/?version=2"
            )
            expect(page.locator("#feedback-train")).to_be_visible()

            page.locator('.feedback-rate-button[data-helpful="true"]').click()
            expect(page.locator("#feedback-result")).to_contain_text("rating is saved")
            assert not errors, errors
        finally:
            browser.close()

    assert DesignVersion.objects.filter(design=run.design_version.design, number=2).exists()
    assert Feedback.objects.get(run=run).helpful is True
