"""The sweeps API on its own (no worker): create with the first trials queued as ordinary runs, the
space checked against the catalog, the user's quota and the sweep's cap, stop, promote, and another
user's sweep as a 404."""

from __future__ import annotations

import pytest
from django.test import Client

from training.models import Run, Sweep, SweepTrial
from training.tests.conftest import make_design

LR_SPACE = {"learning_rate": {"low": 0.0001, "high": 1.0, "log": True}}


@pytest.fixture(autouse=True)
def study_file(settings, tmp_path):
    settings.SWEEPS_SQLITE_PATH = str(tmp_path / "optuna.sqlite3")


@pytest.fixture
def bob_client(bob):
    client = Client()
    client.force_login(bob)
    return client


def _create(client, version, **body):
    return client.post(
        "/api/v1/sweeps/",
        {"design_version": version.pk, "space": LR_SPACE, "n_trials": 4, **body},
        content_type="application/json",
    )


def test_it_queues_the_first_trials_as_runs_of_new_versions(
    alice, alice_client, django_capture_on_commit_callbacks
):
    version, _artifact = make_design(alice, epochs=2)
    with django_capture_on_commit_callbacks(execute=True):
        response = _create(alice_client, version, concurrency=2, first=[{"learning_rate": 0.01}])
    assert response.status_code == 201, response.content
    sweep = Sweep.objects.get(pk=response.json()["id"])
    body = alice_client.get(f"/api/v1/sweeps/{sweep.pk}/").json()
    assert body["status"] == "running" and body["n_trials"] == 4
    assert [t["number"] for t in body["trials"]] == [0, 1]  # the cap: two at once
    assert body["trials"][0]["params"] == {"learning_rate": 0.01}  # the point asked for first
    runs = [Run.objects.get(pk=t["run"]) for t in body["trials"]]
    assert [run.status for run in runs] == ["queued", "queued"]
    for run, trial in zip(runs, body["trials"], strict=True):
        assert run.owner == alice and run.design_version.design_id == version.design_id
        assert run.hyperparameters["learning_rate"] == trial["params"]["learning_rate"]
        assert 0.0001 <= trial["params"]["learning_rate"] <= 1.0
        assert f"LEARNING_RATE = {trial['params']['learning_rate']!r}" in run.code_artifact.code
    assert alice_client.get("/api/v1/sweeps/").json()["results"][0]["id"] == sweep.pk


def test_the_users_run_quota_holds_back_trials(
    alice, alice_client, settings, django_capture_on_commit_callbacks
):
    settings.RUNS_MAX_CONCURRENT_PER_USER = 1
    version, _artifact = make_design(alice, epochs=2)
    with django_capture_on_commit_callbacks(execute=True):
        response = _create(alice_client, version, concurrency=3)
    assert response.status_code == 201
    assert SweepTrial.objects.filter(sweep_id=response.json()["id"]).count() == 1
    assert Run.objects.filter(owner=alice, status__in=Run.ACTIVE).count() == 1


@pytest.mark.parametrize(
    "space, says",
    [
        ({"learning_rate": {"low": 0.001, "high": 100}}, "between"),
        ({"momentum_of_doom": {"low": 0, "high": 1}}, "cannot be varied"),
        ({"dropout": {"low": 0, "high": 0.5}}, "no Dropout layer"),
        ({"batch_size": {"choices": [32, "64; rm -rf"]}}, "whole numbers"),
        ({}, "at least one"),
    ],
)
def test_it_refuses_a_space_it_cannot_search(alice, alice_client, space, says):
    version, _artifact = make_design(alice, epochs=2)
    response = _create(alice_client, version, space=space)
    assert response.status_code == 400
    assert says in " ".join(response.json()["error"]["fields"]["space"])
    assert not Sweep.objects.exists()


def test_stop_cancels_the_queued_trials(alice, alice_client, django_capture_on_commit_callbacks):
    version, _artifact = make_design(alice, epochs=2)
    with django_capture_on_commit_callbacks(execute=True):
        sweep_id = _create(alice_client, version).json()["id"]
    response = alice_client.post(f"/api/v1/sweeps/{sweep_id}/stop/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "stopped"
    assert {t["run_status"] for t in body["trials"]} == {"cancelled"}
    assert {t["state"] for t in body["trials"]} == {"failed"}
    assert alice_client.post(f"/api/v1/sweeps/{sweep_id}/stop/").status_code == 409
    refused = alice_client.post(f"/api/v1/sweeps/{sweep_id}/promote/")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "no_best"


def test_another_users_sweep_is_a_404(alice, alice_client, bob_client, django_capture_on_commit_callbacks):
    version, _artifact = make_design(alice, epochs=2)
    with django_capture_on_commit_callbacks(execute=True):
        sweep_id = _create(alice_client, version).json()["id"]
    assert alice_client.get(f"/api/v1/sweeps/{sweep_id}/").status_code == 200  # the positive control
    assert bob_client.get(f"/api/v1/sweeps/{sweep_id}/").status_code == 404
    assert bob_client.post(f"/api/v1/sweeps/{sweep_id}/stop/").status_code == 404
    assert bob_client.post(f"/api/v1/sweeps/{sweep_id}/promote/").status_code == 404
    assert bob_client.get("/api/v1/sweeps/").json()["results"] == []
    assert _create(bob_client, version).status_code == 404
    assert Sweep.objects.get(pk=sweep_id).status == "running"
