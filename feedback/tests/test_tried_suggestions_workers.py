"""Suggestions tried before they are shown, through real workers (issue 17's Done-when): a deliberately
flawed run (learning rate 1.0) is diagnosed by the feedback worker; "try the top suggestions" trains each
as a short run on the training workers; the panel shows the measured gains, ordered by them."""

from __future__ import annotations

import copy
import random

import dramatiq
import pytest
from django.conf import settings as django_settings

from buildx.test import make_user
from designs import services as design_services
from feedback.models import Feedback, SuggestionTrial
from training.models import Run
from training.tests.ops_support import WorkerGroup, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not django_settings.REDIS_URL, reason="worker processes need Redis and PostgreSQL"),
]


@pytest.fixture
def workers(transactional_db, run_storage, tmp_path):
    import feedback.actors  # noqa: F401 - declares the default queue on the broker
    import training.actors  # noqa: F401 - declares the training queue on the broker

    broker = dramatiq.get_broker()
    for queue in ("training", "default"):
        broker.flush(queue)  # left by earlier tests (our own Redis database only)
    group = WorkerGroup(tmp_path, processes=2, queues=["training", "default"])
    yield group
    group.stop()
    for queue in ("training", "default"):
        broker.flush(queue)


def test_the_top_suggestions_of_a_flawed_run_are_tried_and_ordered_by_their_measured_gain(workers, client):
    alice = make_user("alice@example.com", id=random.randrange(10**6, 10**7))
    client.force_login(alice)
    starter = design_services.starter_get(slug="tiny_cnn_digits")
    assert starter is not None
    spec = copy.deepcopy(starter["spec"])
    spec["hyperparameters"].update(epochs=3, learning_rate=1.0)  # adam at 1.0: it cannot learn
    # Two flaws: no pooling, so a 2048 -> 256 Linear holds nearly every weight (a second finding with
    # its own suggestions, which the learning rate's finding does not silence).
    layers = [layer for layer in spec["layers"] if layer["type"] != "MaxPool2d"][:-1]
    spec["layers"] = [
        *layers,
        {"type": "Linear", "name": "fc1", "out_features": 256},
        {"type": "ReLU", "name": "relu3"},
        {"type": "Linear", "name": "fc", "out_features": 10},
    ]
    design = design_services.design_create(owner=alice, name="Flawed", spec=spec)
    version = design.versions.get()

    response = client.post("/api/v1/runs/", {"design_version": version.pk}, content_type="application/json")
    assert response.status_code == 201, response.content
    run = Run.objects.get(pk=response.json()["id"])
    wait_for(
        lambda: Feedback.objects.filter(run=run, status="ready").exists(),
        timeout=600,
        what=f"the flawed run and its feedback\n{workers.log_text()[-3000:]}",
    )
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    feedback = client.get(f"/api/v1/runs/{run.pk}/feedback/").json()
    assert {f["code"] for f in feedback["findings"]} >= {"learning_rate_high", "oversized_linear"}
    offered = [s for f in feedback["findings"] for s in f["suggestions"]]
    assert len(offered) >= 3, feedback["findings"]

    response = client.post(f"/api/v1/runs/{run.pk}/feedback/try/", {}, content_type="application/json")
    assert response.status_code == 202, response.content
    tried = SuggestionTrial.objects.filter(feedback__run=run)
    assert tried.count() == 3
    wait_for(
        lambda: (
            not tried.filter(run__isnull=True).exists()
            and not Run.objects.filter(suggestion_trial__in=tried, status__in=Run.ACTIVE).exists()
        ),
        timeout=900,  # conditional: three short runs on a loaded two-core machine
        what=f"the tried suggestions' runs\n{workers.log_text()[-3000:]}",
    )

    body = client.get(f"/api/v1/runs/{run.pk}/feedback/").json()
    gains = [t["gain"] for t in body["tried"]]
    assert all(g is not None for g in gains), body["tried"]
    assert gains == sorted(gains, reverse=True)  # the order follows the measured gain
    before = round(run.metrics["accuracy"] * 100, 1)
    for t in body["tried"]:
        trial_run = Run.objects.get(pk=t["run"])
        assert t["before"] == before and t["after"] == round(trial_run.metrics["accuracy"] * 100, 1)
        assert trial_run.hyperparameters["seed"] == run.hyperparameters["seed"] and trial_run.epochs == 3
    assert body["tried"][0]["gain"] > 0 and body["tried"][0]["recommended"]  # lowering lr 1.0 helps

    page = client.get(f"/runs/{run.pk}/").content.decode()
    panel = page[page.index('id="feedback-tried"') :]
    positions = [panel.index(f'data-tried="{t["index"]}"') for t in body["tried"]]
    assert positions == sorted(positions)
    top = body["tried"][0]
    assert f"tried: test accuracy {top['before']}% → {top['after']}% (+{top['gain']:.1f})" in panel
