"""Predictions under load, from the attacker's side: one user's flood of requests must not take the
web process from everyone else (training/limits.py)."""

from __future__ import annotations

import collections
import io
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from PIL import Image

from designs import compiler
from designs.models import CodeArtifact
from sandbox import runner as sandbox_runner
from sandbox.engine import buildx_runtime as rt
from training import limits, predict
from training.models import Run, RunArtifact
from training.services import artifact_store
from training.tests.conftest import make_design


@pytest.fixture
def predict_storage(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    predict.models.clear()
    yield tmp_path
    predict.models.clear()


def finished_run(owner, tmp_path, *, source: str = CodeArtifact.Source.COMPILED) -> Run:
    """A succeeded run of the digits starter with its final model stored (freshly initialised weights:
    what is predicted does not matter here, that it is answered does)."""
    version, compiled = make_design(owner, epochs=1)
    artifact = compiled
    if source != CodeArtifact.Source.COMPILED:
        artifact = CodeArtifact.objects.create(
            version=version, source=source, status=CodeArtifact.Status.READY, code=compiled.code
        )
    run = Run.objects.create(
        owner=owner, design_version=version, code_artifact=artifact, dataset="digits",
        status=Run.Status.SUCCEEDED, epochs=1, epoch=1, progress=1.0,
    )  # fmt: skip
    model = compiler.load_compiled(compiler.compile_version(version))["build_model"]()
    path = tmp_path / f"model-{run.pk}.safetensors"
    rt.write_safetensors(path, dict(model.state_dict()), metadata={})
    artifact_store(
        run=run, kind=RunArtifact.Kind.MODEL, filename="model.safetensors", content=path.read_bytes()
    )
    return run


def digit_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 255).save(buffer, format="PNG")
    return buffer.getvalue()


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post_digit(client: Client, run: Run):
    image = SimpleUploadedFile("digit.png", digit_png(), content_type="image/png")
    return client.post(f"/api/v1/runs/{run.pk}/predict/", {"images": [image]})


def post_digit_in_thread(client: Client, run: Run):
    try:
        return post_digit(client, run)
    finally:
        connection.close()  # back to the pool: the test client, unlike a server, keeps it open


def assert_too_many(response, *, retry_after: int | None = None) -> None:
    assert response.status_code == 429, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "too_many_requests"
    assert "Try again in" in error["message"]
    assert int(response["Retry-After"]) >= 1
    if retry_after is not None:
        assert int(response["Retry-After"]) == retry_after


@pytest.mark.django_db(transaction=True)
def test_alices_flood_gets_two_predictions_at_a_time_and_429s_while_bob_is_served(
    alice, bob, predict_storage, monkeypatch
):
    alices_run, bobs_run = finished_run(alice, predict_storage), finished_run(bob, predict_storage)
    # The model call of alice's run is made heavy: it holds until the test has seen everything else.
    release, lock = threading.Event(), threading.Lock()
    inside = {"now": 0, "most": 0}
    model_call = predict.probabilities

    def heavy(loaded, images):
        if loaded.run_id == alices_run.pk:
            with lock:
                inside["now"] += 1
                inside["most"] = max(inside["most"], inside["now"])
            try:
                release.wait(timeout=60)
            finally:
                with lock:
                    inside["now"] -= 1
        return model_call(loaded, images)

    monkeypatch.setattr(predict, "probabilities", heavy)
    clients = [logged_in(alice) for _ in range(12)]
    bobs = logged_in(bob)

    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(post_digit_in_thread, client, alices_run) for client in clients]
        deadline = time.monotonic() + 60
        while sum(f.done() for f in futures) < 10 or inside["now"] < 2:
            assert time.monotonic() < deadline, ([f.done() for f in futures], inside)
            time.sleep(0.05)
        refused = [f.result() for f in futures if f.done()]
        running = [f for f in futures if not f.done()]

        # Alice's two predictions are still running: bob is answered meanwhile.
        assert bobs.get("/api/v1/me/").status_code == 200
        bobs_prediction = post_digit(bobs, bobs_run)
        assert bobs_prediction.status_code == 200, bobs_prediction.content[:300]
        assert inside["now"] == 2

        release.set()
        answered = [f.result(timeout=60) for f in running]

    for response in refused:
        assert_too_many(response, retry_after=limits.BUSY_RETRY_AFTER_S)
    assert "You already have 2 predictions running" in refused[0].json()["error"]["message"]
    assert [r.status_code for r in answered] == [200, 200]
    assert inside["most"] == 2
    # Their slots were given back: alice may predict again.
    assert post_digit(clients[0], alices_run).status_code == 200


@pytest.mark.django_db
def test_over_the_rate_a_prediction_is_a_429_that_says_when_to_try_again(
    alice, bob, predict_storage, settings
):
    settings.PREDICT_RATE_PER_MINUTE = 3
    alices_run, bobs_run = finished_run(alice, predict_storage), finished_run(bob, predict_storage)
    alices = logged_in(alice)

    assert [post_digit(alices, alices_run).status_code for _ in range(3)] == [200, 200, 200]
    response = post_digit(alices, alices_run)
    assert_too_many(response)
    seconds = int(response["Retry-After"])
    assert seconds <= 60
    assert f"Try again in {seconds} seconds." in response.json()["error"]["message"]
    assert alices.get(f"/api/v1/runs/{alices_run.pk}/mistakes/").status_code == 429  # the same share
    assert post_digit(logged_in(bob), bobs_run).status_code == 200  # a rate per user


@pytest.mark.django_db
def test_a_prediction_that_crashes_gives_its_slot_back(alice, predict_storage, settings, monkeypatch):
    settings.PREDICT_MAX_CONCURRENT_PER_USER = 1
    run = finished_run(alice, predict_storage)
    client = Client(raise_request_exception=False)
    client.force_login(alice)

    def broken(loaded, images):
        raise RuntimeError("the model call failed")

    monkeypatch.setattr(predict, "probabilities", broken)
    assert [post_digit(client, run).status_code for _ in range(3)] == [500, 500, 500]
    monkeypatch.undo()
    assert post_digit(client, run).status_code == 200


@pytest.mark.django_db
def test_a_slot_held_by_a_request_whose_process_died_frees_itself(alice, predict_storage, settings):
    settings.PREDICT_SANDBOX_SECONDS = 2  # a slot lives twice that: 4 s
    run = finished_run(alice, predict_storage)
    client = logged_in(alice)
    # Two requests took alice's two slots, and their process died before giving them back.
    crashed = [limits.prediction_admitted(user_id=alice.pk) for _ in range(2)]
    taken_at = time.monotonic()
    assert [admitted.__enter__() for admitted in crashed] == [None, None]

    assert_too_many(post_digit(client, run))
    time.sleep(max(0.0, taken_at + 4.5 - time.monotonic()))
    assert post_digit(client, run).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_no_database_connection_is_held_while_a_sandboxed_prediction_waits(
    alice, predict_storage, monkeypatch
):
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip("Django never closes an in-memory SQLite database (closing would destroy it)")
    run = finished_run(alice, predict_storage, source=CodeArtifact.Source.LLM)
    held_during_the_wait = []

    def child(*, on_event, **kwargs):
        # The box the assistant's code predicts in (seconds in production): here an instant answer.
        held_during_the_wait.append(connection.connection is not None)
        on_event({"kind": "result", "predictions": [[0.1] * 10]})
        return types.SimpleNamespace(status="succeeded", cause="")

    monkeypatch.setattr(sandbox_runner, "run_script", child)
    response = post_digit(logged_in(alice), run)

    assert response.status_code == 200, response.content[:300]
    assert response.json()["sandboxed"] is True
    assert held_during_the_wait == [False]
    assert collections.Counter(response.json()["predictions"][0]["probabilities"]) == {0.1: 10}
