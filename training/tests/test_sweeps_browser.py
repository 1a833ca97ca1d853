"""The sweep pages in Debian's chromium against a real server (`manage.py serve`: Daphne plus its worker):
"Try variations" from the editor, the sweep page following its trials live to the end without a reload,
then "Make the best one a new version" back to the editor.

Both ways the platform runs: embedded (no REDIS_URL: the server's worker threads train the trials, the
study is an SQLite file) and, as CI runs it, on PostgreSQL and Redis (a `rundramatiq` worker process, the
study in the test database)."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import expect

from buildx.test import make_user
from buildx.testing.browser import chromium_browser, serve_on_test_database
from training.models import Sweep
from training.tests.conftest import FAST_ENV, make_design

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

EMAIL = "alice.sweeps@example.com"


@pytest.fixture
def server(transactional_db, tmp_path):
    alice = make_user(EMAIL, first_name="Alice")
    version, _artifact = make_design(alice, epochs=2)
    env = {
        **FAST_ENV,
        "MEDIA_ROOT": str(tmp_path / "media"),
        "SWEEPS_SQLITE_PATH": str(tmp_path / "optuna.sqlite3"),
    }
    yield env, alice, version


def test_alice_tries_variations_follows_the_sweep_live_and_keeps_the_best(
    server, django_db_blocker, tmp_path
):
    env, alice, version = server
    with (
        serve_on_test_database(tmp=tmp_path, django_db_blocker=django_db_blocker, env=env) as base,
        chromium_browser() as browser,
    ):
        client = Client()
        client.force_login(alice)
        context = browser.new_context(locale="en-US")
        context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                    "url": base,
                }
            ]
        )
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/designs/{version.design_id}/")
        page.locator("#try-variations").click()
        page.wait_for_url(f"{base}/designs/{version.design_id}/variations/")
        page.check("#id_vary_learning_rate")
        page.fill("#id_learning_rate_low", "0.003")
        page.fill("#id_learning_rate_high", "0.03")
        page.fill("#id_n_trials", "2")
        page.fill("#id_concurrency", "1")  # one at a time: the embedded worker's two threads stay apart
        page.locator("#variations-start").click()
        page.wait_for_url(re.compile(rf"{re.escape(base)}/sweeps/\d+/$"))

        # Live, without a reload: both trials appear and the sweep ends.
        expect(page.locator("#sweep-status")).to_have_text("Finished", timeout=600_000)
        expect(page.locator("#sweep-trials tbody tr[data-trial]")).to_have_count(2)
        expect(page.locator("#sweep-best")).to_contain_text("Best so far: trial")
        expect(page.locator("#sweep-best-curve polyline")).to_be_attached()

        page.locator("#sweep-promote").click()
        page.wait_for_url(f"{base}/designs/{version.design_id}/")
        expect(page.locator(".messages")).to_contain_text("The best trial is now version 4 of this design.")
        assert errors == []

    sweep = Sweep.objects.get()
    assert sweep.status == "finished" and sweep.promoted_version.number == 4
    assert sweep.promoted_version.spec == sweep.best_trial.run.design_version.spec
