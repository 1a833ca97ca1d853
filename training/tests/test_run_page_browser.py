"""The run page in Debian's chromium (Playwright) against a real server: live log, live curve, Stop.

The server is `manage.py serve` in a child process on a free port: Daphne plus the worker (threads of
the server in embedded mode; a `rundramatiq` child when REDIS_URL is set), on the test database when
DATABASE_URL names PostgreSQL, or on the SQLite test database's file otherwise.
"""

from __future__ import annotations

import re

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
    # From Train on, the log says what happens (the platform's lines), then the epoch's own line.
    log = page.locator("#run-log .log-line")
    expect(log.filter(has_text="building the model")).to_have_count(1, timeout=120_000)
    expect(log.filter(has_text="Epoch 1/30 started")).to_have_count(1, timeout=120_000)
    expect(log.filter(has_text=re.compile(r"Epoch 1/30\s+train loss"))).to_have_count(1, timeout=120_000)
    expect(page.locator("#chart-loss svg .dot.series-1").first).to_be_attached(timeout=30_000)
    points = int(page.locator("#chart-loss svg.chart-svg").get_attribute("data-points"))
    assert points >= 2  # train and validation loss of epoch 1 at least
    assert float(page.locator("#run-progress").get_attribute("value")) > 0

    page.locator("#stop-button").click()
    expect(page.locator("#run-status")).to_have_text("Cancelled", timeout=60_000)
    # The stop itself is in the log, and a finished run offers archive and delete.
    expect(log.filter(has_text="Stop requested")).to_have_count(1)
    expect(page.locator("#run-manage")).to_be_visible()
    expect(page.locator("#resume-form")).to_be_visible()
    expect(page.locator("#stop-form")).to_be_hidden()
    # After a reload the stored stream tells the same story.
    page.reload()
    expect(page.locator("#run-status")).to_have_text("Cancelled")
    expect(log.filter(has_text=re.compile(r"Epoch 1/30\s+train loss"))).to_have_count(1, timeout=30_000)
    assert errors == []


def test_charts_keep_large_labels_whole_and_show_a_run_hidden_under_another(server, browser):
    """Rows written here as a worker would leave them: the charts draw what is stored."""
    from training import services
    from training.models import EpochMetric, Run

    base, _version_id, _artifact_id = server
    email = "curves@example.com"
    password = "a-long-beginner-password-42"
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Signed up through the server itself: its password hasher is not the test process's fast one.
    page.goto(f"{base}/accounts/signup/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password1]", password)
    page.fill("input[name=password2]", password)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(f"{base}/dashboard/")

    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(email=email)
    runs = []
    for losses in ([8009662123415.0, 3.5e12, 1.2e12], [2.0, 1.0, 0.5], [2.0, 1.0, 0.5]):
        version, artifact = make_design(user, epochs=3)
        run = services.run_create(owner=user, version=version, artifact=artifact)
        Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED, epoch=3, progress=1.0)
        for epoch, loss in enumerate(losses, start=1):
            EpochMetric.objects.create(
                run=run, epoch=epoch, train_loss=loss, val_loss=loss, train_acc=0.5, val_acc=0.25 * epoch
            )
        runs.append(run)

    # A loss of 8009662123415: its label is whole and inside the chart, not cut to "123415".
    page.goto(f"{base}/runs/{runs[0].pk}/")
    ticks = page.locator("#chart-loss svg text.tick-y")
    expect(ticks.first).to_be_attached()
    assert "8.01e12" in ticks.all_text_contents()
    chart = page.locator("#chart-loss svg").bounding_box()
    for i in range(ticks.count()):
        assert ticks.nth(i).bounding_box()["x"] >= chart["x"] - 0.5, ticks.nth(i).text_content()
    # Accuracy reads as a percentage, as everywhere else.
    assert all(t.endswith("%") for t in page.locator("#chart-acc svg text.tick-y").all_text_contents())

    # Two runs with the same curve: the one drawn under the other still shows (dashes, its own markers,
    # a thinner line) and the legend names both with their styles.
    page.goto(f"{base}/runs/compare/?ids={runs[1].pk}&ids={runs[2].pk}")
    svg = page.locator("#compare-loss svg")
    expect(svg.locator("polyline.series-1")).to_have_count(1)
    assert svg.locator("polyline.series-0").get_attribute("stroke-dasharray") is None
    assert svg.locator("polyline.series-1").get_attribute("stroke-dasharray")
    width_0 = float(svg.locator("polyline.series-0").get_attribute("stroke-width"))
    width_1 = float(svg.locator("polyline.series-1").get_attribute("stroke-width"))
    assert width_1 < width_0
    assert svg.locator(".dot.series-0").first.evaluate("n => n.tagName") != svg.locator(
        ".dot.series-1"
    ).first.evaluate("n => n.tagName")
    legend = page.locator("#compare-loss .chart-legend li")
    expect(legend).to_have_count(2)
    assert legend.nth(1).locator(".swatch-line").get_attribute("data-dash") == "7 4"
    assert (
        legend.nth(0).locator(".swatch-marker").inner_text()
        != legend.nth(1).locator(".swatch-marker").inner_text()
    )
    page.close()
    assert errors == []
