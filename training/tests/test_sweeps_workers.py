"""A sweep through real workers (issue 17's Done-when): six trials over the learning rate on digits run
on two worker processes at once, sharing one Optuna study in PostgreSQL; the hopeless trial (lr 10) is
pruned before its last epoch; the best trial beats the starting design; every trial is a run of the
user's, counted in the quotas."""

from __future__ import annotations

import copy
import random

import dramatiq
import optuna
import pytest
from django.conf import settings as django_settings

from buildx.test import make_user
from buildx.worker_metrics import heartbeats_read
from designs import services as design_services
from training import services
from training.models import Run, RunEvent, Sweep, SweepTrial
from training.services import sweeps
from training.tests.ops_support import WorkerGroup, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not django_settings.REDIS_URL, reason="worker processes need Redis and PostgreSQL"),
]

EPOCHS = 6  # the lr-10 trial is pruned at epoch 1: five epochs of room for the stop to land
START_LR = 0.0003  # the starting design: a learning rate too small to learn much in 6 epochs
HOPELESS_LR = 10.0


@pytest.fixture
def two_workers(transactional_db, run_storage, tmp_path):
    import training.actors  # noqa: F401 - declares the training queue on the broker

    broker = dramatiq.get_broker()
    broker.flush("training")  # left by earlier tests (our own Redis database only)
    group = WorkerGroup(tmp_path, processes=2, queues=["training"])
    yield group
    group.stop()
    broker.flush("training")


def starting_version(owner):
    """The digits starter, 4 epochs, with a learning rate far too small: a version to improve on."""
    starter = design_services.starter_get(slug="tiny_cnn_digits")
    assert starter is not None
    spec = copy.deepcopy(starter["spec"])
    spec["hyperparameters"].update(epochs=EPOCHS, learning_rate=START_LR)
    design = design_services.design_create(owner=owner, name="Digits", spec=spec)
    return design.versions.get()


def test_a_sweep_over_the_learning_rate_runs_on_two_workers_prunes_and_beats_the_start(
    two_workers, client, settings
):
    # An id of its own: Redis pub/sub is shared by every database number.
    alice = make_user("alice@example.com", id=random.randrange(10**6, 10**7))
    client.force_login(alice)
    worker_pids = wait_for(
        lambda: (
            len({r["pid"] for r in heartbeats_read()} & two_workers.pids()) == 2
            and {r["pid"] for r in heartbeats_read()} & two_workers.pids()
        ),
        what=f"two worker processes\n{two_workers.log_text()[-3000:]}",
    )
    version = starting_version(alice)

    # The starting design, trained as the user would.
    response = client.post("/api/v1/runs/", {"design_version": version.pk}, content_type="application/json")
    assert response.status_code == 201, response.content
    baseline = Run.objects.get(pk=response.json()["id"])
    wait_for(
        lambda: Run.objects.filter(pk=baseline.pk, status__in=Run.FINISHED).exists(),
        timeout=600,
        what=f"the starting design's run\n{two_workers.log_text()[-3000:]}",
    )
    baseline.refresh_from_db()
    assert baseline.status == "succeeded", baseline.error

    # Two good rates first (each the bar the next trials are measured against), then the hopeless one.
    response = client.post(
        "/api/v1/sweeps/",
        {
            "design_version": version.pk,
            "space": {"learning_rate": {"low": 0.0001, "high": HOPELESS_LR, "log": True}},
            "n_trials": 6,
            "concurrency": 2,
            "first": [{"learning_rate": 0.003}, {"learning_rate": 0.03}, {"learning_rate": HOPELESS_LR}],
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    sweep = Sweep.objects.get(pk=response.json()["id"])
    wait_for(
        lambda: Sweep.objects.filter(pk=sweep.pk).exclude(status="running").exists(),
        timeout=1200,  # conditional: six trials on a loaded two-core machine
        what=f"the sweep to finish\n{two_workers.log_text()[-3000:]}",
    )
    body = client.get(f"/api/v1/sweeps/{sweep.pk}/").json()
    assert body["status"] == "finished", body
    trials = {t["number"]: t for t in body["trials"]}
    assert sorted(trials) == [0, 1, 2, 3, 4, 5]

    # The hopeless trial was pruned before its last epoch, stopped by the ordinary stop, and says so.
    hopeless = trials[2]
    assert hopeless["params"] == {"learning_rate": HOPELESS_LR}
    assert hopeless["state"] == "pruned", hopeless
    assert hopeless["pruned_epoch"] < EPOCHS and hopeless["epoch"] < EPOCHS
    assert hopeless["run_status"] == "cancelled"
    lines = [
        line
        for event in RunEvent.objects.filter(run_id=hopeless["run"], kind="run.log")
        for line in event.payload.get("lines", [event.payload])
    ]
    assert any("Pruned by the sweep" in str(line) for line in lines), lines

    # The best trial beats the starting design on the platform's own test measurement.
    best = trials[body["best_trial"]]
    assert best["state"] == "complete"
    assert best["test_accuracy"] > baseline.metrics["accuracy"], (best, baseline.metrics)
    assert body["best_so_far"][-1]["best"] == best["value"]

    # One study in PostgreSQL, written by both worker processes: its trials and epochs are ours.
    study = optuna.load_study(study_name=sweep.study_name, storage=sweeps.study_storage())
    states = {t.number: t.state.name for t in study.trials}
    assert states == {
        n: {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL"}[t["state"]]
        for n, t in trials.items()
    }
    assert set(study.trials[2].intermediate_values) == set(range(1, hopeless["pruned_epoch"] + 1))
    # (Which of the first two is pruned, if either, depends on which ends first: only the finished count.)
    for trial in study.trials:
        if trial.state.name == "COMPLETE":
            assert set(trial.intermediate_values) == set(range(1, EPOCHS + 1))

    # Trials are the user's ordinary runs, trained by both worker processes, two at once.
    runs = list(Run.objects.filter(pk__in=[t["run"] for t in trials.values()]).order_by("started_at"))
    assert {r.owner_id for r in runs} == {alice.pk}
    assert {int(r.worker_id.split(":")[1]) for r in runs} == worker_pids
    assert runs[1].started_at < runs[0].finished_at, "the first two trials trained at the same time"
    # ...and never more of the user's runs at once than the quota allows.
    every = list(Run.objects.filter(owner=alice))
    changes = sorted([(r.started_at, 1) for r in every] + [(r.finished_at, -1) for r in every])
    at_once = max(sum(change for _at, change in changes[: i + 1]) for i in range(len(changes)))
    assert at_once == settings.RUNS_MAX_CONCURRENT_PER_USER
    # Their training time is the user's: a day's quota just under what they used refuses the next run.
    used = sum(r.run_seconds for r in every)
    assert all(r.run_seconds > 0 for r in runs)
    settings.RUNS_USER_DAILY_SECONDS = used - baseline.run_seconds / 2
    with pytest.raises(services.RunRefused) as refused:
        services.run_create(owner=alice, version=version, artifact=baseline.code_artifact)
    assert refused.value.code == "quota_wall_time"
    assert SweepTrial.objects.filter(sweep=sweep).count() == 6
