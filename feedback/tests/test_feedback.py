"""Stored feedback on runs: the diagnosis of a real run, Apply, rating, isolation, the actor's message."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from buildx.models import LLMCall
from designs.models import DesignVersion
from feedback import services
from feedback.actors import feedback_run
from feedback.models import Feedback
from training import services as run_services
from training.models import EpochMetric, Run
from training.tests.conftest import make_design, ws_connect

# Four epochs of a model that memorises the training set while validation falls back: overfitting.
OVERFIT = [
    (1.2, 0.60, 1.25, 0.58),
    (0.6, 0.80, 0.90, 0.72),
    (0.3, 0.92, 0.85, 0.75),
    (0.1, 0.98, 1.00, 0.74),
    (0.03, 1.00, 1.20, 0.72),
    (0.01, 1.00, 1.40, 0.71),
]


def finished_run(owner, *, status=Run.Status.SUCCEEDED, curves=OVERFIT, **fields) -> Run:
    """A run of the digits starter as if it had trained: stored curves and test result."""
    version, artifact = make_design(owner, epochs=max(3, len(curves)))
    run = run_services.run_create(owner=owner, version=version, artifact=artifact)
    metrics = {"accuracy": 0.71, "class_names": [str(i) for i in range(10)]} if status == "succeeded" else {}
    Run.objects.filter(pk=run.pk).update(
        status=status,
        metrics=metrics,
        metrics_source="platform" if metrics else "",
        epoch=len(curves),
        progress=1.0,
        **fields,
    )
    for epoch, (tl, ta, vl, va) in enumerate(curves, start=1):
        EpochMetric.objects.create(run=run, epoch=epoch, train_loss=tl, train_acc=ta, val_loss=vl, val_acc=va)
    run.refresh_from_db()
    return run


@pytest.mark.django_db(transaction=True)
def test_a_real_tiny_digits_run_is_diagnosed_from_what_it_stored_and_its_top_suggestion_applies(
    alice, run_storage, fast_liveness, llm_off
):
    # One epoch of the digits starter: the run is real (sandbox, harness), the plan is too short.
    version, artifact = make_design(alice, epochs=1)
    run = run_services.run_create(owner=alice, version=version, artifact=artifact)
    run = run_services.run_execute(run=run_services.run_claim(run_id=run.pk))
    assert run.status == Run.Status.SUCCEEDED, run.error

    feedback_run(run.pk)  # what the worker does with the message run_execute queued

    feedback = Feedback.objects.get(run=run)
    codes = [f["code"] for f in feedback.findings]
    assert "too_few_epochs" in codes
    few = feedback.findings[codes.index("too_few_epochs")]
    assert few["evidence"]["epochs"] == 1
    assert feedback.status == Feedback.Status.READY
    assert feedback.llm_note == "no_llm" and feedback.narrative == ""

    new, created = services.suggestion_apply(feedback=feedback, index=0, user=alice)
    assert created and new.number == 2 and new.is_valid
    assert new.spec != version.spec


def test_the_api_shows_findings_with_evidence_and_labelled_suggestions(alice, alice_client):
    run = finished_run(alice)
    services.feedback_diagnose(run=run)

    body = alice_client.get(f"/api/v1/runs/{run.pk}/feedback/").json()

    assert body["status"] == "ready"
    overfitting = next(f for f in body["findings"] if f["code"] == "overfitting")
    assert overfitting["evidence"]["train_acc"] == 1.0 and overfitting["title"]
    indexes = [s["index"] for f in body["findings"] for s in f["suggestions"]]
    assert indexes == list(range(len(indexes))) and indexes
    assert all(s["label"] for f in body["findings"] for s in f["suggestions"])


def test_applying_a_suggestion_answers_201_with_a_validated_new_version_and_its_editor(alice, alice_client):
    run = finished_run(alice)
    services.feedback_diagnose(run=run)
    body = alice_client.get(f"/api/v1/runs/{run.pk}/feedback/").json()
    dropout = next(
        s for f in body["findings"] for s in f["suggestions"] if s["suggestion"]["op"] == "insert_layer"
    )

    response = alice_client.post(
        f"/api/v1/runs/{run.pk}/feedback/apply/", {"index": dropout["index"]}, content_type="application/json"
    )

    assert response.status_code == 201, response.content
    data = response.json()
    version = DesignVersion.objects.get(pk=data["version"])
    assert version.design_id == run.design_version.design_id and version.number == 2 and version.is_valid
    assert any(layer["type"] == "Dropout" for layer in version.spec["layers"])
    assert data["editor_url"].endswith(f"/designs/{version.design_id}/?version=2")


def test_applying_a_suggestion_that_does_not_exist_is_a_400_with_the_field(alice, alice_client):
    run = finished_run(alice)
    services.feedback_diagnose(run=run)

    response = alice_client.post(
        f"/api/v1/runs/{run.pk}/feedback/apply/", {"index": 99}, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["index"]
    assert run.design_version.design.versions.count() == 1


def test_rating_feedback_is_stored_with_its_time(alice, alice_client):
    run = finished_run(alice)
    services.feedback_diagnose(run=run)

    response = alice_client.post(
        f"/api/v1/runs/{run.pk}/feedback/rate/", {"helpful": False}, content_type="application/json"
    )

    assert response.status_code == 200 and response.json()["helpful"] is False
    feedback = Feedback.objects.get(run=run)
    assert feedback.helpful is False and feedback.rated_at is not None


def test_another_users_feedback_is_404_everywhere(alice, bob, client):
    run = finished_run(alice)
    services.feedback_diagnose(run=run)
    client.force_login(bob)

    assert client.get(f"/api/v1/runs/{run.pk}/feedback/").status_code == 404
    assert (
        client.post(
            f"/api/v1/runs/{run.pk}/feedback/apply/", {"index": 0}, content_type="application/json"
        ).status_code
        == 404
    )
    assert (
        client.post(
            f"/api/v1/runs/{run.pk}/feedback/rate/", {"helpful": True}, content_type="application/json"
        ).status_code
        == 404
    )
    assert run.design_version.design.versions.count() == 1
    assert Feedback.objects.get(run=run).helpful is None


def test_the_narrative_is_written_in_the_owners_language_when_an_llm_is_configured(alice, llm_server):
    alice.preferred_language = "ko"
    alice.save()
    run = finished_run(alice)
    llm_server.script("모델이 훈련 데이터를 외웠습니다. 제안된 Dropout을 추가해 보세요.")

    feedback_run(run.pk)

    feedback = Feedback.objects.get(run=run)
    assert feedback.narrative.startswith("모델이") and feedback.narrative_language == "ko"
    (request,) = llm_server.chat_requests
    assert "Korean" in request.messages[0]["content"]
    assert LLMCall.objects.filter(user=alice, purpose="feedback").count() == 1


def test_a_failed_run_gets_an_explanation_of_its_error(alice, llm_server):
    run = finished_run(
        alice,
        status=Run.Status.FAILED,
        curves=[],
        cause="exception",
        error="mat1 and mat2 shapes cannot be multiplied",
        traceback="Traceback...\nRuntimeError: mat1 and mat2 shapes cannot be multiplied (32x64 and 128x10)",
    )
    llm_server.script("The Linear layer expects 128 inputs but gets 64: set in_features to 64.")

    feedback_run(run.pk)

    feedback = Feedback.objects.get(run=run)
    assert "in_features to 64" in feedback.error_explanation
    assert "mat1 and mat2" in llm_server.chat_requests[0].messages[1]["content"]


def test_an_llm_that_fails_leaves_the_findings_and_says_why(alice, llm_server):
    from buildx.testing.openai_server import Reply

    run = finished_run(alice)
    llm_server.script(*[Reply(status=500)] * 5)

    feedback_run(run.pk)

    feedback = Feedback.objects.get(run=run)
    assert feedback.findings and feedback.narrative == "" and feedback.llm_note


@pytest.mark.django_db(transaction=True)
def test_the_actor_tells_the_owners_browser_that_feedback_is_ready(alice, llm_off):
    async def scenario():
        run = await database_sync_to_async(finished_run)(alice)
        communicator = await ws_connect(alice)
        await database_sync_to_async(feedback_run)(run.pk)
        from buildx import live

        await asyncio.to_thread(live.flush)
        while True:
            message = await communicator.receive_json_from(timeout=10)
            if message.get("type") == "feedback.ready":
                break
        await communicator.disconnect()
        return run, message

    run, message = asyncio.run(scenario())
    assert message["run"] == run.pk and message["status"] == "ready"
    assert message["feedback"] == Feedback.objects.get(run=run).pk


def test_the_finished_run_page_shows_findings_with_their_numbers_and_apply_buttons(alice, alice_client):
    run = finished_run(alice)
    services.feedback_diagnose(run=run)

    page = alice_client.get(f"/runs/{run.pk}/").content.decode()

    assert 'id="feedback"' in page and 'data-code="overfitting"' in page
    # The training accuracy the overfitting finding is based on, labelled and in words.
    assert '<tr data-key="train_acc"><th scope="row">Training accuracy</th><td>100.0%</td></tr>' in page
    assert 'class="button feedback-apply" data-index="0"' in page
    assert "js/feedback-panel.js" in page and "<script>" not in page
    assert "Was this feedback helpful?" in page


def test_the_run_page_says_feedback_is_coming_until_it_is_stored(alice, alice_client):
    run = finished_run(alice)

    page = alice_client.get(f"/runs/{run.pk}/").content.decode()

    assert "being prepared" in page and 'data-status="pending"' in page
