"""The feedback panel in Debian's chromium: Apply a suggestion, follow to the new version, rate."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import expect

from buildx.testing.browser import chromium_browser
from designs.models import DesignVersion
from feedback import services
from feedback.models import Feedback
from feedback.tests.test_feedback import finished_run

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@contextlib.contextmanager
def _run_page(user, live_server, run, *, locale: str = "en-US") -> Iterator[tuple]:
    """Debian's chromium on ``run``'s page, logged in as ``user``, in English unless ``locale`` says
    otherwise: (page, script errors)."""
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    with chromium_browser() as browser:
        context = browser.new_context(locale=locale)
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}])
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{live_server.url}/runs/{run.pk}/")
        try:
            yield page, errors
        finally:
            context.close()


def test_alice_applies_a_suggestion_from_the_run_page_and_rates_the_feedback(alice, live_server):
    run = finished_run(alice)
    services.feedback_diagnose(run=run)
    with _run_page(alice, live_server, run) as (page, errors):
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

    assert DesignVersion.objects.filter(design=run.design_version.design, number=2).exists()
    assert Feedback.objects.get(run=run).helpful is True


def test_alice_applies_a_suggestion_trains_the_changed_design_and_compares_before_and_after(
    alice, live_server, run_storage, fast_liveness, llm_off
):
    from django.db import connection

    from training import services as run_services
    from training.models import Run

    run = finished_run(alice)  # overfits; test accuracy 0.71
    services.feedback_diagnose(run=run)
    with _run_page(alice, live_server, run) as (page, errors):
        try:
            # Apply "add Dropout", then open the new version in the editor: it says where it came from.
            page.locator('#feedback .feedback-apply:has-text("Dropout")').first.click()
            page.locator("#feedback-editor-link").click()
            page.wait_for_selector("#editor[data-ready=true]")
            expect(page.locator("#version-origin")).to_have_text(
                f"Changed from run #{run.pk}: Add Dropout(p=0.3) after flatten"
            )

            # Train it from the Code tab; the run trains here, for real (six epochs of the digits).
            page.locator("#tab-code").click()
            expect(page.locator("#code")).to_contain_text("nn.Dropout(p=0.3)", timeout=15_000)
            page.locator("#train").click()
            page.wait_for_url(re.compile(r".*/runs/\d+/$"), timeout=30_000)
            after = Run.objects.get(pk=int(page.url.rstrip("/").rsplit("/", 1)[1]))
            after = run_services.run_execute(run=run_services.run_claim(run_id=after.pk))
            assert after.status == Run.Status.SUCCEEDED, after.error

            # Its run page links to the compare page with both runs: before and after, side by side.
            page.reload()
            page.locator("#compare-before").click()
            page.wait_for_url(re.compile(r".*/runs/compare/\?ids=\d+&ids=\d+$"))
            expect(page.locator("#applied-suggestion")).to_contain_text("Add Dropout(p=0.3) after flatten")
            expect(page.locator("#accuracy-before")).to_have_text("71.0%")
            expect(page.locator("#accuracy-after")).to_have_text(f"{after.metrics['accuracy'] * 100:.1f}%")
            delta = round((after.metrics["accuracy"] - 0.71) * 100, 1) + 0.0
            expect(page.locator("#accuracy-delta")).to_contain_text(
                f"{delta:+.1f} percentage points" if delta else "No change"
            )
            expect(page.locator('#design-changes li[data-layer="dropout1"]')).to_contain_text(
                "Added layer dropout1 (Dropout) after flatten: p=0.3"
            )
            expect(page.locator("#compare-loss svg")).to_have_count(1)  # the curves, overlaid
        finally:
            # Playwright's loop gives the queries above a connection of their own: hand it back to the
            # pool (inside the loop, where it is), or the test database cannot be dropped at the end.
            connection.close()
    assert not errors, errors


def test_a_korean_browser_reads_the_findings_evidence_and_note_in_korean(alice, live_server, llm_off):
    from feedback.actors import feedback_run

    run = finished_run(alice)  # overfits: train 100%, validation 71%
    feedback_run(run.pk)  # no LLM here: the note says the findings are the feedback
    with _run_page(alice, live_server, run, locale="ko-KR") as (page, errors):
        finding = page.locator('#feedback .finding[data-code="overfitting"]')
        expect(finding.locator("h3")).to_have_text("모델이 과적합되고 있습니다")
        expect(finding.locator("p").first).to_contain_text(
            "학습 정확도는 100.0%까지 올랐지만 검증 정확도는 71.0%입니다"
        )
        facts = finding.locator("table.evidence")
        expect(facts.locator('tr[data-key="train_acc"] th')).to_have_text("학습 정확도")
        expect(facts.locator('tr[data-key="train_acc"] td')).to_have_text("100.0%")
        expect(facts.locator('tr[data-key="gap"] td')).to_have_text("29.0%p (처음 에포크들: 8.0%p)")
        expect(facts.locator('tr[data-key="val_loss"] td')).to_have_text(
            "에포크 3에서 가장 낮은 0.8500, 마지막 1.4000"
        )
        text = finding.inner_text()
        for raw in ("train_acc", "best_val_loss", "True", "None", "[{"):
            assert raw not in text, raw
        # The note says "the findings above": it sits below them, in Korean too.
        note = page.locator("#feedback-note")
        expect(note).to_have_text(
            "이 서버에는 언어 모델이 설정되어 있지 않습니다. 위의 진단 결과가 피드백입니다."
        )
        assert page.locator("#feedback .findings").bounding_box()["y"] < note.bounding_box()["y"]
        assert not errors, errors
