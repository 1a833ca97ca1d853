"""The run page in Debian's chromium (Playwright) against a real server: live log, live curve, Stop.

The server is `manage.py serve` in a child process on a free port: Daphne plus the worker (threads of
the server in embedded mode; a `rundramatiq` child when REDIS_URL is set), on the test database when
DATABASE_URL names PostgreSQL, or on the SQLite test database's file otherwise.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from buildx.test import PASSWORD, make_user
from buildx.testing.browser import chromium_browser, serve_on_test_database
from training.tests.conftest import FAST_ENV, make_design

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EMAIL = "alice.browser@example.com"


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    """(base URL, design version id) of a BuildX server with its worker, alice and a 30-epoch design."""

    tmp = tmp_path_factory.mktemp("runs-browser")
    with django_db_blocker.unblock():
        alice = make_user(EMAIL, first_name="Alice")
        version, artifact = make_design(alice, epochs=30)
    env = {**FAST_ENV, "MEDIA_ROOT": str(tmp / "media")}
    try:
        with serve_on_test_database(tmp=tmp, django_db_blocker=django_db_blocker, env=env) as base:
            yield base, version.pk, artifact.pk
    finally:
        with django_db_blocker.unblock():
            from django.contrib.auth import get_user_model

            get_user_model().objects.filter(email=EMAIL).delete()


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:
        yield chromium


def test_the_run_page_shows_the_log_and_curve_live_and_stop_cancels_the_run(server, browser):
    base, version_id, artifact_id = server
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=login]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.locator("form button[type=submit]").last.click()
    page.wait_for_url(f"{base}/dashboard/")

    run = page.evaluate(
        """async ([version, artifact]) => {
            const token = document.cookie.split("; ").find(c => c.startsWith("csrftoken=")).split("=")[1];
            const r = await fetch("/api/v1/runs/", {method: "POST", credentials: "same-origin",
                headers: {"Content-Type": "application/json", "X-CSRFToken": token},
                body: JSON.stringify({design_version: version, code_artifact: artifact})});
            return await r.json();
        }""",
        [version_id, artifact_id],
    )
    assert run["status"] == "queued", run
    page.goto(f"{base}/runs/{run['id']}/")

    # Live: the worker's lines reach the console and the curve grows, without a reload.
    expect(page.locator("#run-status")).to_have_text("Running", timeout=120_000)
    expect(page.locator("#run-log .log-line").filter(has_text="Epoch 1/30")).to_have_count(1, timeout=120_000)
    expect(page.locator("#chart-loss svg .dot.series-1").first).to_be_attached(timeout=30_000)
    points = int(page.locator("#chart-loss svg").get_attribute("data-points"))
    assert points >= 2  # train and validation loss of epoch 1 at least
    assert float(page.locator("#run-progress").get_attribute("value")) > 0

    page.locator("#stop-button").click()
    expect(page.locator("#run-status")).to_have_text("Cancelled", timeout=60_000)
    expect(page.locator("#resume-form")).to_be_visible()
    expect(page.locator("#stop-form")).to_be_hidden()
    # After a reload the stored stream tells the same story.
    page.reload()
    expect(page.locator("#run-status")).to_have_text("Cancelled")
    expect(page.locator("#run-log .log-line").filter(has_text="Epoch 1/30")).to_have_count(1, timeout=30_000)
    assert errors == []
