"""carol, in a real browser against a real server: log in, open her course's overview, open alice's runs."""

from __future__ import annotations

import pytest

from accounts.tests.conftest import make_run
from buildx.test import PASSWORD
from buildx.testing.browser import CHROMIUM_ARGS
from training.models import Run

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_carol_logs_in_opens_the_course_overview_and_alices_run(live_server, carol, alice, bob, courses):
    from playwright.sync_api import expect, sync_playwright

    course_a, _course_b = courses
    run = make_run(alice, design_name="Alicenet", accuracy=0.912, epochs=3, log_lines=8)
    running = make_run(alice, design_name="Alicenet live", status=Run.Status.RUNNING)
    make_run(bob, design_name="Bobnet", accuracy=0.5)
    overview = f"{live_server.url}/admin/accounts/course/{course_a.pk}/overview/"

    # No ORM below: Playwright's sync API runs an event loop in this thread.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            # Broken pages show as refused scripts or styles (the CSP) and as failed loads.
            console_errors: list[str] = []
            failed_loads: list[str] = []
            page.on(
                "console",
                lambda msg: (
                    msg.type == "error"
                    and not msg.text.startswith("Failed to load resource")
                    and console_errors.append(msg.text)
                ),
            )
            page.on(
                "response",
                lambda r: (
                    r.status >= 400 and not r.url.endswith("/favicon.ico") and failed_loads.append(r.url)
                ),
            )

            page.goto(overview)
            # The admin sends her to the site's login, which brings her back.
            expect(page).to_have_url(
                f"{live_server.url}/accounts/login/?next=%2Fadmin%2Faccounts%2Fcourse%2F{course_a.pk}%2Foverview%2F"
            )
            page.fill("#id_login", "carol@example.com")
            page.fill("#id_password", PASSWORD)
            page.click("form.form-login button[type=submit]")
            expect(page).to_have_url(overview)

            students = page.locator("#course-students")
            expect(students).to_contain_text("alice@example.com")
            expect(students).to_contain_text("91.2%")
            expect(page.locator("body")).not_to_contain_text("Bobnet")
            expect(page.locator("body")).not_to_contain_text("bob@example.com")

            page.click(f"#course-runs a:text('#{run.pk}')")
            expect(page).to_have_url(f"{live_server.url}/admin/training/run/{run.pk}/change/")
            expect(page.locator("h2", has_text="epochs").first).to_be_visible()
            expect(page.locator("body")).to_contain_text("Alicenet line 8")
            live = page.locator("a.live-run-link")
            expect(live).to_have_attribute("href", f"/runs/{run.pk}/")

            # A run still training: its admin page reloads itself (external JS, allowed by the CSP).
            page.goto(f"{live_server.url}/admin/training/run/{running.pk}/change/")
            with page.expect_event("load", timeout=15_000):
                pass
            expect(page.locator("[data-admin-refresh]")).to_be_visible()

            assert console_errors == []
            assert failed_loads == []

            # The live link opens the student's run page for her, read-only (this test server has no
            # WebSocket, so only what the page renders is checked here; test_instructor_live follows
            # the stream).
            page.goto(f"{live_server.url}/admin/training/run/{run.pk}/change/")
            page.click("a.live-run-link")
            expect(page).to_have_url(f"{live_server.url}/runs/{run.pk}/")
            expect(page.locator("#run-viewer-note")).to_contain_text("alice@example.com")
            expect(page.locator("#run-status")).to_have_text("Succeeded")
            expect(page.locator("#stop-button")).to_have_count(0)
            expect(page.locator("#chart-loss svg")).to_have_count(1)
        finally:
            browser.close()
