"""Issue 8's "request feedback again", in the instructor's run admin, and the scoped feedback admin."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from accounts.tests.conftest import make_run
from feedback import services
from feedback.models import Feedback

pytestmark = pytest.mark.django_db


def post_action(client, url: str, action: str, pks: list[int]):
    return client.post(url, {"action": action, ACTION_CHECKBOX_NAME: pks, "index": 0}, follow=True)


def test_carol_requests_feedback_again_for_her_students_finished_runs_only(carol_client, alice_run, bob_run):
    running = make_run(alice_run.owner, design_name="Alicenet live", status="running")

    response = post_action(
        carol_client, "/admin/training/run/", "request_feedback_again", [alice_run.pk, running.pk, bob_run.pk]
    )

    assert response.status_code == 200
    body = response.content.decode()
    assert "Feedback requested again for 1 run" in body
    assert "1 run has not finished yet" in body
    assert Feedback.objects.get(run=alice_run).findings  # two epochs planned: too few
    assert not Feedback.objects.filter(run__in=[running, bob_run]).exists()  # bob is not carol's student


def test_carol_sees_her_students_feedback_and_not_bobs(carol_client, alice_run, bob_run):
    services.feedback_diagnose(run=alice_run)
    services.feedback_diagnose(run=bob_run)

    listing = carol_client.get("/admin/feedback/feedback/")
    assert listing.status_code == 200
    body = listing.content.decode()
    assert "alice@example.com" in body and "bob@example.com" not in body

    bobs = Feedback.objects.get(run=bob_run)
    detail = carol_client.get(f"/admin/feedback/feedback/{bobs.pk}/change/", follow=True)
    assert "bob@example.com" not in detail.content.decode()


def test_carol_reads_her_students_findings_and_note_in_her_language_not_as_codes(
    carol_client, alice_run, llm_off
):
    from feedback.actors import feedback_run

    feedback_run(alice_run.pk)  # two epochs planned: too few; no LLM here
    feedback = Feedback.objects.get(run=alice_run)
    assert feedback.llm_note == "no_llm"

    body = carol_client.get(
        f"/admin/feedback/feedback/{feedback.pk}/change/", HTTP_ACCEPT_LANGUAGE="ko"
    ).content
    page = body.decode()
    assert "에포크가 너무 적습니다" in page
    assert "이 서버에는 언어 모델이 설정되어 있지 않습니다" in page
    assert "no_llm" not in page
