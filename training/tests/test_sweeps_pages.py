"""The sweep pages: "Try variations" from the design, the sweep's page (trials, pruned ones saying so,
the best-so-far curve, stop and promote) and its live message to the owner's sockets only."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from buildx import live
from training.models import EpochMetric, Run, Sweep, SweepTrial
from training.services import sweeps
from training.tests.conftest import make_design, ws_connect


@pytest.fixture(autouse=True)
def study_file(settings, tmp_path):
    settings.SWEEPS_SQLITE_PATH = str(tmp_path / "optuna.sqlite3")


FORM = {
    "vary_learning_rate": "on",
    "learning_rate_low": "0.001",
    "learning_rate_high": "0.1",
    "n_trials": "3",
    "concurrency": "2",
}


def start_from_the_form(client, version, django_capture_on_commit_callbacks, **changes) -> Sweep:
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/designs/{version.design_id}/variations/", {**FORM, **changes})
    assert response.status_code == 302, response.content.decode()[-2000:]
    sweep = Sweep.objects.get()
    assert response["Location"] == f"/sweeps/{sweep.pk}/"
    return sweep


def test_the_editor_offers_try_variations_and_the_form_starts_a_sweep(
    alice, alice_client, django_capture_on_commit_callbacks
):
    version, _artifact = make_design(alice, epochs=2)
    editor = alice_client.get(f"/designs/{version.design_id}/").content.decode()
    assert f'href="/designs/{version.design_id}/variations/"' in editor
    form = alice_client.get(f"/designs/{version.design_id}/variations/").content.decode()
    assert 'id="variations-form"' in form and "learning_rate_low" in form
    sweep = start_from_the_form(
        alice_client, version, django_capture_on_commit_callbacks, batch_sizes="16, 32"
    )
    assert sweep.space == {"learning_rate": {"low": 0.001, "high": 0.1, "log": True}}
    page = alice_client.get(f"/sweeps/{sweep.pk}/").content.decode()
    assert 'id="sweep-trials"' in page and page.count("<tr data-trial=") == 2
    assert 'id="sweep-stop"' in page and 'id="sweep-promote"' not in page  # nothing finished yet
    korean = alice_client.get(f"/sweeps/{sweep.pk}/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "스윕 중지" in korean and "시도 3개 중 2개 시작, 동시에 최대 2개" in korean
    # The trials' versions say where they came from in the design's history.
    editor = alice_client.get(f"/designs/{version.design_id}/").content.decode()
    assert f"sweep #{sweep.pk}, trial 0: learning_rate=" in editor


def test_the_form_shows_why_a_sweep_is_refused(alice, alice_client):
    version, _artifact = make_design(alice, epochs=2)
    response = alice_client.post(
        f"/designs/{version.design_id}/variations/", {**FORM, "learning_rate_high": "100"}
    )
    assert response.status_code == 200
    assert "The range of learning_rate must lie between" in response.content.decode()
    assert not Sweep.objects.exists()
    response = alice_client.post(
        f"/designs/{version.design_id}/variations/", {"n_trials": "3", "concurrency": "1"}
    )
    assert "Pick at least one hyperparameter to vary." in response.content.decode()


def test_the_page_shows_pruned_and_best_trials_and_promotes_the_best(
    alice, alice_client, django_capture_on_commit_callbacks
):
    version, _artifact = make_design(alice, epochs=2)
    sweep = start_from_the_form(alice_client, version, django_capture_on_commit_callbacks)
    good, hopeless = sweep.trials.order_by("number")
    # As the workers would have left them: one trial complete, one pruned after its first epoch.
    Run.objects.filter(pk=good.run_id).update(status="succeeded", epoch=2, metrics={"accuracy": 0.93})
    EpochMetric.objects.create(run_id=good.run_id, epoch=2, val_acc=0.91)
    Run.objects.filter(pk=hopeless.run_id).update(status="cancelled", epoch=1)
    EpochMetric.objects.create(run_id=hopeless.run_id, epoch=1, val_acc=0.1)
    SweepTrial.objects.filter(pk=hopeless.pk).update(state="pruned", pruned_epoch=1, value=0.1)
    SweepTrial.objects.filter(pk=good.pk).update(state="complete", value=0.91)
    Sweep.objects.filter(pk=sweep.pk).update(best_trial=good)

    live_part = alice_client.get(f"/sweeps/{sweep.pk}/?fragment=1").content.decode()
    assert live_part.startswith('\n<div id="sweep-live"') or live_part.lstrip().startswith(
        '<div id="sweep-live"'
    )
    assert "Pruned after epoch 1: behind the other trials" in live_part
    assert (
        "Best so far: trial 0, validation accuracy 91.0%" in live_part and "test accuracy 93.0%" in live_part
    )
    assert "<polyline" in live_part  # the best-so-far curve

    run_page = alice_client.get(f"/runs/{hopeless.run_id}/").content.decode()
    assert f'Trial 1 of <a href="/sweeps/{sweep.pk}/">sweep #{sweep.pk}</a>' in run_page
    assert "pruned after epoch 1, behind the other trials" in run_page
    korean = alice_client.get(f"/runs/{hopeless.run_id}/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert f'<a href="/sweeps/{sweep.pk}/">스윕 #{sweep.pk}</a>의 시도 1' in korean
    assert "에포크 1 뒤 가지치기됨" in korean
    assert 'id="run-pruned"' not in alice_client.get(f"/runs/{good.run_id}/").content.decode()

    response = alice_client.post(f"/sweeps/{sweep.pk}/promote/")
    sweep.refresh_from_db()
    latest = version.design.versions.order_by("-number").first()
    assert response.status_code == 302 and response["Location"] == f"/designs/{version.design_id}/"
    assert sweep.promoted_version == latest
    assert latest.spec == good.run.design_version.spec and latest.number > good.run.design_version.number

    response = alice_client.post(f"/sweeps/{sweep.pk}/stop/")
    assert response.status_code == 302
    sweep.refresh_from_db()
    assert sweep.status == "stopped"


def test_another_users_sweep_page_is_a_404(alice, bob, alice_client, django_capture_on_commit_callbacks):
    version, _artifact = make_design(alice, epochs=2)
    sweep = start_from_the_form(alice_client, version, django_capture_on_commit_callbacks)
    bob_client = Client()
    bob_client.force_login(bob)
    assert alice_client.get(f"/sweeps/{sweep.pk}/").status_code == 200
    for url in (f"/sweeps/{sweep.pk}/", f"/designs/{version.design_id}/variations/"):
        assert bob_client.get(url).status_code == 404
    assert bob_client.post(f"/sweeps/{sweep.pk}/stop/").status_code == 404
    assert bob_client.post(f"/sweeps/{sweep.pk}/promote/").status_code == 404
    sweep.refresh_from_db()
    assert sweep.status == "running"


@pytest.mark.django_db(transaction=True)
def test_the_owners_sockets_hear_that_the_sweep_moved_and_nobody_elses(alice, bob):
    async def scenario():
        version, _artifact = await database_sync_to_async(make_design)(alice, epochs=2)
        sweep = await database_sync_to_async(sweeps.sweep_create)(
            owner=alice,
            version=version,
            space={"learning_rate": {"low": 0.001, "high": 0.1, "log": True}},
            n_trials=2,
        )
        alices, bobs = await ws_connect(alice), await ws_connect(bob)
        await database_sync_to_async(sweeps.sweep_publish)(sweep_id=sweep.pk)
        await asyncio.to_thread(live.flush)
        while True:
            message = await alices.receive_json_from(timeout=10)
            if message.get("type") == "sweep.update":
                break
        nothing = await bobs.receive_nothing(timeout=1)
        await alices.disconnect()
        await bobs.disconnect()
        return sweep, message, nothing

    sweep, message, nothing = asyncio.run(scenario())
    assert message == {"type": "sweep.update", "sweep": sweep.pk, "status": "running"}
    assert nothing
