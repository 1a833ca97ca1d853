"""The runs table in Debian's chromium (Playwright) against the live test server: sort and filter by a
hyperparameter, compare four runs (overlaid curves, the differences marked), and a reload or a copied
link restores the same view. Runs are rows as a worker leaves them: nothing trains here."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import expect

from buildx.testing.browser import chromium_browser
from training.tests.conftest import make_design
from training.tests.test_runs_table import add_run

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def rows(page) -> list[int]:
    return [
        int(r) for r in page.locator("#runs-table tbody tr").evaluate_all("rs => rs.map(r => r.dataset.run)")
    ]


def test_the_table_sorts_and_filters_by_a_hyperparameter_compares_four_runs_and_a_reload_keeps_the_view(
    alice, live_server
):
    design = make_design(alice)
    rates = (0.3, 0.001, 0.05, 0.01, 0.0001)
    runs = {
        lr: add_run(
            alice,
            design,
            lr=lr,
            batch_size=64 if lr == 0.05 else 32,
            accuracy=0.5 + lr,
            val_acc=(0.2 + lr, 0.4 + lr, 0.5 + lr),
        )
        for lr in rates
    }
    by_rate = [runs[lr].pk for lr in sorted(rates)]

    client = Client()
    client.force_login(alice)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    with chromium_browser() as browser:
        context = browser.new_context(viewport={"width": 768, "height": 1024})  # a tablet, upright
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}])
        page = context.new_page()
        # Room for a loaded 2-core machine: each step below waits for a server-rendered page.
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{live_server.url}/runs/")
        expect(page.locator("#runs-table tbody tr")).to_have_count(5, timeout=30_000)

        # Sort by the learning rate: ascending, then descending, from its header.
        header = page.locator('#runs-table th[data-column="hp.learning_rate"]')
        header.get_by_role("link").click()
        expect(header).to_have_attribute("aria-sort", "ascending", timeout=30_000)
        assert rows(page) == by_rate
        header.get_by_role("link").click()
        expect(header).to_have_attribute("aria-sort", "descending", timeout=30_000)
        assert rows(page) == by_rate[::-1]

        # Filter: learning rate from 0.001 to 0.1; the sort stays.
        page.fill("#filter-learning_rate-min", "0.001")
        page.fill("#filter-learning_rate-max", "0.1")
        page.locator("#apply-filters").click()
        expect(page.locator("#runs-table tbody tr")).to_have_count(3, timeout=30_000)
        assert rows(page) == [runs[0.05].pk, runs[0.01].pk, runs[0.001].pk]
        assert "hp.learning_rate.min=0.001" in page.url and "sort=-hp.learning_rate" in page.url

        # Fewer columns: the choice goes into the URL too.
        page.locator("#column-choice summary").click()
        page.locator('#column-choice input[value="device"]').uncheck()
        page.locator("#apply-filters").click()
        expect(page.locator('#runs-table th[data-column="device"]')).to_have_count(0, timeout=30_000)
        table_url = page.url

        # A reload, and the same link in a new tab, show the same view.
        for _ in range(2):
            page.reload()
            assert rows(page) == [runs[0.05].pk, runs[0.01].pk, runs[0.001].pk]
            expect(header).to_have_attribute("aria-sort", "descending")
            expect(page.locator("#filter-learning_rate-min")).to_have_value("0.001")
            expect(page.locator("#filter-learning_rate-max")).to_have_value("0.1")
            expect(page.locator('#runs-table th[data-column="device"]')).to_have_count(0)
        shared = context.new_page()
        shared.goto(table_url)
        assert rows(shared) == [runs[0.05].pk, runs[0.01].pk, runs[0.001].pk]
        shared.close()
        # At tablet width the page itself does not scroll sideways: the table scrolls in its region.
        wide = page.evaluate(
            """() => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                 .slice(0, 8).map(e => e.tagName + '.' + e.className + '#' + e.id + ' ' + Math.round(e.getBoundingClientRect().right))"""
        )
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), wide

        # Compare four: clear the filter, tick four runs.
        page.goto(f"{live_server.url}/runs/?sort=hp.learning_rate")
        chosen = by_rate[:4]  # 0.0001, 0.001, 0.01, 0.05: the 0.05 run has another batch size too
        for pk in chosen:
            page.locator(f'tr[data-run="{pk}"] input.compare-pick').check()
        page.locator("#compare-selected").click()
        page.wait_for_url(re.compile(r".*/runs/compare/\?.*"))
        compare_url = page.url
        for _ in range(2):
            loss = page.locator("#compare-loss svg")
            expect(loss.locator("polyline.series")).to_have_count(4, timeout=30_000)
            expect(page.locator("#compare-loss .chart-legend li")).to_have_count(4)
            assert loss.get_attribute("data-series") == "4"
            # The differing rows are marked with a visible sign, and the cells that differ from the first run.
            lr_row = page.locator('tr.differs[data-hyperparameter="learning_rate"]')
            expect(lr_row.locator("th .diff-marker")).to_be_visible()
            expect(lr_row.locator("td.cell-differs")).to_have_count(3)
            batch_row = page.locator('tr.differs[data-hyperparameter="batch_size"]')
            expect(batch_row.locator("td.cell-differs")).to_have_count(1)
            expect(batch_row.locator("td.cell-differs .diff-marker")).to_have_text("≠")
            expect(page.locator('tr[data-hyperparameter="optimizer"] td.cell-differs')).to_have_count(0)
            expect(page.locator("#parallel-coordinates svg polyline")).to_have_count(4)
            page.reload()
        assert page.url == compare_url
        context.close()
    assert errors == []
