"""Suggestions tried before they are shown, without workers: "try the top suggestions" makes a short
trial run per suggestion (same seed, bounded epochs, a fair baseline when the run was longer); the panel
orders them by measured gain and marks a worse one as not recommended; refusals and another user's run."""

from __future__ import annotations

import pytest
from django.test import Client

from feedback import services
from feedback.models import SuggestionTrial
from feedback.tests.test_feedback import finished_run
from training.models import Run

# Each as the diagnosis stores it: a finding with two suggestions, another with one.
FINDINGS = [
    {
        "code": "learning_rate_high",
        "severity": "critical",
        "evidence": {"learning_rate": 0.01},
        "suggestions": [
            {"op": "set_hyperparameter", "name": "learning_rate", "value": 0.001},
            {"op": "set_hyperparameter", "name": "batch_size", "value": 64},
        ],
    },
    {
        "code": "too_few_epochs",
        "severity": "info",
        "evidence": {},
        "suggestions": [{"op": "set_hyperparameter", "name": "weight_decay", "value": 0.5}],
    },
]


def flawed_feedback(owner, **fields):
    """A finished run's feedback with FINDINGS (three suggestions) in it."""
    feedback = services.feedback_diagnose(run=finished_run(owner, **fields))
    feedback.findings = FINDINGS
    feedback.save(update_fields=["findings"])
    return feedback


def measured(trial: SuggestionTrial, accuracy: float | None) -> None:
    """As the worker leaves a trial's run: succeeded with the platform's test accuracy (or failed)."""
    run_id = trial.run_id
    assert run_id is not None
    if accuracy is None:
        Run.objects.filter(pk=run_id).update(status="failed")
    else:
        Run.objects.filter(pk=run_id).update(status="succeeded", metrics={"accuracy": accuracy})


def test_trying_queues_one_short_run_per_top_suggestion_and_orders_them_by_gain(
    alice, alice_client, settings, django_capture_on_commit_callbacks
):
    settings.RUNS_MAX_CONCURRENT_PER_USER = 5
    settings.FEEDBACK_TRY_MAX_EPOCHS = 3
    feedback = flawed_feedback(alice)
    run = feedback.run
    assert run.epochs > 3  # the run was longer than a trial: a baseline at 3 epochs is trained too
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(
            f"/api/v1/runs/{run.pk}/feedback/try/", {}, content_type="application/json"
        )
    assert response.status_code == 202, response.content
    trials = {t.index: t for t in SuggestionTrial.objects.filter(feedback=feedback).select_related("run")}
    assert sorted(trials) == [-1, 0, 1, 2]
    for trial in trials.values():
        assert trial.run.status == "queued" and trial.run.owner == alice
        assert trial.run.epochs == 3 and trial.run.hyperparameters["seed"] == run.hyperparameters["seed"]
    assert trials[0].run.hyperparameters["learning_rate"] == 0.001
    assert trials[0].version.derived_from_run == run  # linked to the run it came from, as Apply does

    page = alice_client.get(f"/runs/{run.pk}/").content.decode()
    assert 'data-trying="111"' in page and page.count("being tried…") == 6  # beside each, and in the list

    measured(trials[-1], 0.80)
    measured(trials[0], 0.912)
    measured(trials[1], 0.75)
    measured(trials[2], None)
    body = alice_client.get(f"/api/v1/runs/{run.pk}/feedback/").json()
    assert [(t["index"], t["gain"]) for t in body["tried"]] == [(0, 11.2), (1, -5.0), (2, None)]
    assert body["tried"][0]["before"] == 80.0 and body["tried"][0]["after"] == 91.2
    assert (
        body["tried"][0]["recommended"] and body["tried"][1]["worse"] and not body["tried"][1]["recommended"]
    )
    assert body["findings"][0]["suggestions"][0]["tried"]["gain"] == 11.2

    page = alice_client.get(f"/runs/{run.pk}/").content.decode()
    tried = page[page.index('id="feedback-tried"') :]
    first, second = tried.index("tried: test accuracy 80.0% → 91.2% (+11.2)"), tried.index("(-5.0)")
    assert first < second  # best gain first
    assert "worse: not recommended" in tried[second : second + 200]
    assert f'href="/runs/{trials[0].run_id}/"' in tried
    assert 'id="feedback-try"' not in page  # tried already
    assert 'data-trying=""' in page  # every trial has its result: the panel stops asking

    korean = alice_client.get(f"/runs/{run.pk}/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "시도함: 테스트 정확도 80.0% → 91.2% (+11.2)" in korean

    # Asking again makes nothing new.
    again = alice_client.post(f"/api/v1/runs/{run.pk}/feedback/try/", {}, content_type="application/json")
    assert again.status_code == 202 and SuggestionTrial.objects.filter(feedback=feedback).count() == 4


def test_the_quota_holds_trials_back_until_a_run_ends(alice, settings, django_capture_on_commit_callbacks):
    settings.RUNS_MAX_CONCURRENT_PER_USER = 1
    settings.FEEDBACK_TRY_MAX_EPOCHS = 100  # no baseline: the run's own result is the "before"
    feedback = flawed_feedback(alice)
    with django_capture_on_commit_callbacks(execute=True):
        services.suggestions_try(feedback=feedback, user=alice, top=2)
    trials = list(SuggestionTrial.objects.filter(feedback=feedback).order_by("index"))
    assert [t.index for t in trials] == [0, 1]
    assert trials[0].run is not None and trials[1].run is None
    measured(trials[0], 0.9)
    services.run_finished(run=Run.objects.get(pk=trials[0].run_id))  # as the worker announces it
    trials[1].refresh_from_db()
    assert trials[1].run is not None and trials[1].run.status == "queued"


def test_a_run_without_a_test_result_or_another_users_cannot_be_tried(alice, alice_client, bob):
    failed = flawed_feedback(alice, status="failed")
    response = alice_client.post(
        f"/api/v1/runs/{failed.run_id}/feedback/try/", {}, content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "not_measured"
    mine = flawed_feedback(alice)
    bob_client = Client()
    bob_client.force_login(bob)
    response = bob_client.post(
        f"/api/v1/runs/{mine.run_id}/feedback/try/", {}, content_type="application/json"
    )
    assert response.status_code == 404
    assert not SuggestionTrial.objects.exists()
    with pytest.raises(services.FeedbackRefused):
        services.suggestions_try(feedback=mine, user=bob)
