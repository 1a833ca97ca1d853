"""The runs API: creation, quotas with reasons, queue places, and another user's run as a 404 everywhere."""

from __future__ import annotations

import pytest
from django.test import Client

from designs.catalog import HYPERPARAMETERS
from training import services
from training.models import Run, RunEvent
from training.tests.conftest import make_design


@pytest.fixture
def bob_client(bob):
    client = Client()
    client.force_login(bob)
    return client


def _post_run(client, version, artifact):
    return client.post(
        "/api/v1/runs/",
        {"design_version": version.pk, "code_artifact": artifact.pk},
        content_type="application/json",
    )


def test_it_creates_a_queued_run_with_its_first_event(alice, alice_client):
    version, artifact = make_design(alice, epochs=2)
    response = _post_run(alice_client, version, artifact)
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "queued" and body["epochs"] == 2 and body["dataset"] == "digits"
    assert body["queue_position"] == 1
    run = Run.objects.get(pk=body["id"])
    assert run.params == version.report["totals"]["params"]
    assert [(e.seq, e.kind, e.payload["status"]) for e in RunEvent.objects.filter(run=run)] == [
        (1, "run.status", "queued")
    ]


def test_a_version_with_no_code_yet_trains_its_compiled_script(alice, alice_client):
    from designs import services as design_services

    version, _compiled = make_design(alice, epochs=2)
    new, _created = design_services.design_save_version(
        design=version.design,
        spec={**version.spec, "hyperparameters": {**version.spec["hyperparameters"], "epochs": 3}},
    )
    assert not new.artifacts.exists()  # as a version saved by "Apply" on a suggestion

    response = alice_client.post("/api/v1/runs/", {"design_version": new.pk}, content_type="application/json")

    assert response.status_code == 201, response.content
    run = Run.objects.get(pk=response.json()["id"])
    assert run.code_artifact.version == new and run.code_artifact.source == "compiled"
    assert "EPOCHS = 3" in run.code_artifact.code and run.epochs == 3


def test_a_queued_run_shows_its_place_in_the_queue(alice, bob, alice_client, bob_client):
    first = _post_run(alice_client, *make_design(alice)).json()
    second = _post_run(bob_client, *make_design(bob)).json()
    assert (first["queue_position"], second["queue_position"]) == (1, 2)
    assert Client().get("/api/v1/runs/").status_code in (401, 403)


def test_it_refuses_a_run_over_the_concurrency_quota_with_the_reason(alice, alice_client, settings):
    settings.RUNS_MAX_CONCURRENT_PER_USER = 1
    version, artifact = make_design(alice)
    assert _post_run(alice_client, version, artifact).status_code == 201
    response = _post_run(alice_client, version, artifact)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "quota_concurrent" and "limit is 1" in error["message"]
    assert Run.objects.filter(owner=alice).count() == 1


def test_it_refuses_too_many_epochs_and_too_many_parameters_as_the_editor_said(alice, alice_client, settings):
    settings.RUNS_MAX_EPOCHS = 2
    version, artifact = make_design(alice, epochs=3)
    response = _post_run(alice_client, version, artifact)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "quota_epochs"
    # The same limit and the same sentence as the editor's report showed before Train (designs/limits.py).
    report = alice_client.post(
        "/api/v1/designs/validate/", version.spec, content_type="application/json"
    ).json()
    blocker = report["report"]["blockers"][0]
    assert blocker["code"] == "epochs_over_limit" and "at most 2." in blocker["message"]
    assert response.json()["error"]["fields"]["epochs"] == [f"{blocker['message']} {blocker['hint']}"]

    settings.RUNS_MAX_EPOCHS = 100
    settings.RUNS_MAX_PARAMS = 1000
    response = _post_run(alice_client, *make_design(alice, epochs=1, name="Big"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "quota_params"
    assert "at most 1,000" in response.json()["error"]["message"]
    assert not Run.objects.filter(owner=alice).exists()


def test_train_refuses_a_version_that_is_not_the_design_on_screen(alice, alice_client):
    from designs import services as design_services

    version, artifact = make_design(alice, epochs=2)
    on_screen = {**version.spec, "hyperparameters": {**version.spec["hyperparameters"], "epochs": 5}}

    # The editor sends what it shows: unsaved edits are never trained as the saved version.
    response = alice_client.post(
        "/api/v1/runs/",
        {"design_version": version.pk, "code_artifact": artifact.pk, "spec": on_screen},
        content_type="application/json",
    )
    assert response.status_code == 409, response.content
    error = response.json()["error"]
    assert error["code"] == "unsaved_changes" and "save your changes first" in error["message"]
    assert not Run.objects.filter(owner=alice).exists()

    # A spec that cannot even be read is not the version either.
    broken = {**on_screen, "layers": [{"type": "Conv2d", "out_channels": "many"}]}
    response = alice_client.post(
        "/api/v1/runs/", {"design_version": version.pk, "spec": broken}, content_type="application/json"
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "unsaved_changes"

    # Saved, the screen is the new version: it trains (the same spec, however it is written).
    new, _created = design_services.design_save_version(design=version.design, spec=on_screen)
    defaults = {p.name: p.default for p in HYPERPARAMETERS}
    loose = {  # defaults left out, as a client may
        **on_screen,
        "hyperparameters": {k: v for k, v in on_screen["hyperparameters"].items() if defaults[k] != v},
    }
    assert loose["hyperparameters"] != on_screen["hyperparameters"]
    response = alice_client.post(
        "/api/v1/runs/", {"design_version": new.pk, "spec": loose}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    assert Run.objects.get(pk=response.json()["id"]).design_version == new

    # An older version asked for explicitly (no screen to compare with) is a choice, and trains.
    response = _post_run(alice_client, version, artifact)
    assert response.status_code == 201 and response.json()["version_number"] == 1


def test_it_refuses_a_run_once_the_daily_training_time_is_used(alice, alice_client, settings):
    settings.RUNS_USER_DAILY_SECONDS = 60
    version, artifact = make_design(alice)
    run = services.run_create(owner=alice, version=version, artifact=artifact)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED, run_seconds=61)
    response = _post_run(alice_client, version, artifact)
    assert response.status_code == 400 and response.json()["error"]["code"] == "quota_wall_time"


def test_it_refuses_a_run_once_the_users_stored_files_reach_their_limit(
    alice, bob, alice_client, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    settings.RUNS_USER_STORAGE_BYTES = 3 * 2**20
    version, artifact = make_design(alice)
    run = services.run_create(owner=alice, version=version, artifact=artifact)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED)
    services.artifact_store(run=run, kind="model", filename="model.safetensors", content=b"\0" * 3 * 2**20)

    response = _post_run(alice_client, version, artifact)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "quota_storage" and "your limit is 3 MB" in error["message"]
    assert Run.objects.filter(owner=alice).count() == 1
    # Bob's files are his own: alice's use is not his.
    bob_version, bob_artifact = make_design(bob)
    assert (
        services.run_create(owner=bob, version=bob_version, artifact=bob_artifact).status == Run.Status.QUEUED
    )


def test_it_refuses_code_that_is_not_ready(alice, alice_client):
    version, artifact = make_design(alice)
    artifact.status = artifact.Status.REJECTED
    artifact.save()
    response = _post_run(alice_client, version, artifact)
    assert response.status_code == 400 and response.json()["error"]["code"] == "code_not_ready"


def test_another_users_run_is_a_404_everywhere(alice, bob, bob_client):
    version, artifact = make_design(alice)
    run = services.run_create(owner=alice, version=version, artifact=artifact)
    for url in ("", "events/", "metrics/", "artifacts/", "artifacts/script/"):
        assert bob_client.get(f"/api/v1/runs/{run.pk}/{url}").status_code == 404, url
    for url in ("stop/", "resume/"):
        assert bob_client.post(f"/api/v1/runs/{run.pk}/{url}").status_code == 404, url
    assert bob_client.get("/api/v1/runs/").json()["results"] == []
    assert bob_client.get(f"/runs/{run.pk}/").status_code == 404
    # Nor can bob train alice's design version under his own name.
    assert _post_run(bob_client, version, artifact).status_code == 404
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED and not run.stop_requested


def test_stopping_a_queued_run_cancels_it_and_resume_queues_it_again(alice, alice_client):
    version, artifact = make_design(alice)
    run = services.run_create(owner=alice, version=version, artifact=artifact)
    response = alice_client.post(f"/api/v1/runs/{run.pk}/stop/")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert alice_client.post(f"/api/v1/runs/{run.pk}/stop/").status_code == 409
    response = alice_client.post(f"/api/v1/runs/{run.pk}/resume/")
    assert response.status_code == 202 and response.json()["status"] == "queued"
    run.refresh_from_db()
    assert run.resume is True
    kinds = list(RunEvent.objects.filter(run=run).values_list("seq", "kind"))
    assert kinds == [(1, "run.status"), (2, "run.done"), (3, "run.status")]


def test_events_are_paged_after_a_sequence_number(alice, alice_client):
    version, artifact = make_design(alice)
    run = services.run_create(owner=alice, version=version, artifact=artifact)
    services.events_append(
        run_id=run.pk, events=[("run.log", {"stream": "stdout", "lines": [str(i)]}) for i in range(10)]
    )
    body = alice_client.get(f"/api/v1/runs/{run.pk}/events/?after=3&limit=4").json()
    assert [e["seq"] for e in body["events"]] == [4, 5, 6, 7]
    assert body["more"] is True and body["next_after"] == 7 and body["last_seq"] == 11
    body = alice_client.get(f"/api/v1/runs/{run.pk}/events/?after=7&before=10").json()
    assert [e["seq"] for e in body["events"]] == [8, 9] and body["more"] is False


def test_the_list_filters_by_status_and_design(alice, alice_client):
    v1, a1 = make_design(alice, name="One")
    v2, a2 = make_design(alice, name="Two")
    r1 = services.run_create(owner=alice, version=v1, artifact=a1)
    r2 = services.run_create(owner=alice, version=v2, artifact=a2)
    services.run_stop(run=r2)
    ids = lambda q: [r["id"] for r in alice_client.get(f"/api/v1/runs/?{q}").json()["results"]]  # noqa: E731
    assert ids("status=queued") == [r1.pk]
    assert ids("status=cancelled") == [r2.pk]
    assert ids(f"design={v1.design_id}") == [r1.pk]


def test_the_run_list_reads_queue_positions_in_its_own_query_whatever_the_number_of_runs(
    alice, alice_client, settings, django_assert_max_num_queries
):
    settings.RUNS_MAX_CONCURRENT_PER_USER = 20
    version, artifact = make_design(alice)
    for _ in range(8):
        services.run_create(owner=alice, version=version, artifact=artifact)
    Run.objects.filter(pk=Run.objects.order_by("queued_at").first().pk).update(status=Run.Status.RUNNING)
    with django_assert_max_num_queries(5):  # session, user, count, page, its tags: not one per run
        runs = alice_client.get("/api/v1/runs/").json()["results"]
    positions = sorted(r["queue_position"] for r in runs if r["queue_position"] is not None)
    assert positions == list(range(1, 8))
    assert [r["queue_position"] for r in runs if r["status"] == "running"] == [None]
