"""End to end: the API creates a run, a real Dramatiq worker trains it, a WebSocket client watches it."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from training.models import EpochMetric, Run, RunEvent
from training.tests.conftest import as_events, make_design, receive_until_done, wait_for, ws_connect

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _create_run(user, **design) -> Run:
    version, artifact = make_design(user, **design)
    client = Client()
    client.force_login(user)
    response = client.post(
        "/api/v1/runs/",
        {"design_version": version.pk, "code_artifact": artifact.pk},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return Run.objects.get(pk=response.json()["id"])


def _stored(run_id: int) -> list[dict]:
    return [e.as_message() for e in RunEvent.objects.filter(run_id=run_id).order_by("seq")]


async def test_a_watcher_sees_the_whole_run_in_order_and_it_equals_the_stored_events(alice, workers):
    communicator = await ws_connect(alice)
    run = await database_sync_to_async(_create_run)(alice, epochs=3)
    await communicator.send_json_to({"type": "watch", "run": run.pk, "after_seq": 0})
    await database_sync_to_async(workers.start)()

    streamed = await receive_until_done(communicator, run.pk)
    await communicator.disconnect()

    seqs = [m["seq"] for m in streamed]
    assert seqs == list(range(1, len(seqs) + 1))
    kinds = [m["type"] for m in streamed]
    assert kinds[0] == "run.status" and streamed[0]["data"]["status"] == "queued"
    assert streamed[1]["type"] == "run.status" and streamed[1]["data"]["status"] == "running"
    assert kinds[-1] == "run.done" and streamed[-1]["data"]["status"] == "succeeded", streamed
    assert "run.log" in kinds
    epochs = [m["data"]["epoch"] for m in streamed if m["type"] == "run.epoch"]
    assert epochs == [1, 2, 3]
    assert kinds.index("run.status") < kinds.index("run.log") < kinds.index("run.done")
    assert kinds.index("run.epoch") < kinds.index("run.done")
    assert streamed == await database_sync_to_async(_stored)(run.pk)

    run = await database_sync_to_async(Run.objects.get)(pk=run.pk)
    assert run.status == Run.Status.SUCCEEDED and run.epoch == 3 and run.progress == 1.0
    assert 0 <= run.metrics["accuracy"] <= 1 and len(run.metrics["confusion_matrix"]) == 10
    assert await database_sync_to_async(EpochMetric.objects.filter(run=run).count)() == 3


async def test_a_reconnecting_watcher_gets_exactly_the_events_it_missed(alice, workers):
    communicator = await ws_connect(alice)
    run = await database_sync_to_async(_create_run)(alice, epochs=3)
    await communicator.send_json_to({"type": "watch", "run": run.pk, "after_seq": 0})
    await database_sync_to_async(workers.start)()
    seen = []
    while not any(m.get("type") == "run.epoch" for m in seen):
        for message in as_events(await communicator.receive_json_from(timeout=90)):
            if message.get("run") == run.pk and "seq" in message:
                seen.append(message)
    await communicator.disconnect()  # mid-run: epoch 1 of 3 seen
    last = seen[-1]["seq"]

    def finished() -> bool:
        return Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED

    await database_sync_to_async(wait_for)(finished, timeout=120, what="the run to finish")
    communicator = await ws_connect(alice)
    await communicator.send_json_to({"type": "watch", "run": run.pk, "after_seq": last})
    rest = await receive_until_done(communicator, run.pk)
    await communicator.disconnect()

    stored = await database_sync_to_async(_stored)(run.pk)
    assert [m["seq"] for m in seen] == list(range(1, last + 1))
    assert rest == stored[last:]
    assert seen + rest == stored


async def test_bob_cannot_watch_alices_run_nor_hear_its_events(alice, bob, workers):
    bobs = await ws_connect(bob)
    run = await database_sync_to_async(_create_run)(alice, epochs=1)
    await bobs.send_json_to({"type": "watch", "run": run.pk, "after_seq": 0})
    answer = await bobs.receive_json_from(timeout=10)
    assert answer == {"type": "error", "code": "not_found", "run": run.pk, "message": "No such run."}
    await database_sync_to_async(workers.start)()

    def finished() -> bool:
        return Run.objects.get(pk=run.pk).is_finished()

    await database_sync_to_async(wait_for)(finished, timeout=120, what="alice's run to finish")
    assert await bobs.receive_nothing(timeout=1)
    await bobs.disconnect()


async def test_an_anonymous_websocket_is_closed():
    from channels.testing import WebsocketCommunicator

    from buildx.asgi import application

    communicator = WebsocketCommunicator(
        application, "/ws/", headers=[(b"origin", b"http://testserver"), (b"host", b"testserver")]
    )
    connected, code = await communicator.connect(timeout=10)
    assert not connected and code == 4401
