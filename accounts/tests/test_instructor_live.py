"""The admin's "live run page" link: an instructor follows a student's run read-only, live.

carol teaches alice (course A); dave teaches bob (course B) and must see nothing of alice's.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from accounts.tests.conftest import make_run
from training import services
from training.models import Run
from training.tests.conftest import ws_connect

pytestmark = pytest.mark.django_db(transaction=True)


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_carol_opens_alices_run_page_read_only_and_dave_gets_a_404(alice, carol, dave, courses):
    run = make_run(alice, design_name="Alicenet", status=Run.Status.RUNNING)

    page = _client(carol).get(f"/runs/{run.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "alice@example.com" in html and "as their instructor" in html and "belongs to Alice" in html
    assert 'id="stop-form"' not in html and 'id="resume-form"' not in html
    assert f'data-events-api="/api/v1/runs/{run.pk}/events/"' in html

    assert _client(dave).get(f"/runs/{run.pk}/").status_code == 404
    # Her own page still has the buttons.
    assert 'id="stop-form"' in _client(alice).get(f"/runs/{run.pk}/").content.decode()


def test_carol_reads_alices_run_through_the_api_but_cannot_stop_it(alice, carol, dave, courses):
    run = make_run(alice, design_name="Alicenet", status=Run.Status.RUNNING, log_lines=4)
    carol_api = _client(carol)

    assert carol_api.get(f"/api/v1/runs/{run.pk}/").json()["id"] == run.pk
    events = carol_api.get(f"/api/v1/runs/{run.pk}/events/?after=1").json()
    assert [e["seq"] for e in events["events"]] == [2, 3, 4]
    assert carol_api.get(f"/api/v1/runs/{run.pk}/metrics/").status_code == 200
    # Her own list is hers: a student's runs are followed from the admin.
    assert carol_api.get("/api/v1/runs/").json()["count"] == 0

    stop = carol_api.post(f"/api/v1/runs/{run.pk}/stop/")
    assert stop.status_code == 404 and stop.json()["error"]["code"] == "not_found"
    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING

    dave_api = _client(dave)
    for path in ("", "events/", "metrics/", "artifacts/"):
        assert dave_api.get(f"/api/v1/runs/{run.pk}/{path}").status_code == 404


async def test_carol_watches_alices_run_live_and_dave_cannot(alice, carol, dave, courses):
    run = await database_sync_to_async(make_run)(
        alice, design_name="Alicenet", status=Run.Status.RUNNING, log_lines=3
    )
    carols = await ws_connect(carol)
    await carols.send_json_to({"type": "watch", "run": run.pk, "after_seq": 1})
    replayed = await carols.receive_json_from(timeout=10)  # the stored events: one frame
    assert [m["seq"] for m in replayed] == [2, 3]
    assert await carols.receive_json_from(timeout=10) == {"type": "watching", "run": run.pk, "last_seq": 3}

    def append() -> None:
        rows = services.events_append(
            run_id=run.pk, events=[("run.log", {"stream": "stdout", "lines": ["epoch 1 done"]})]
        )
        services.events_publish(owner_id=alice.pk, run_id=run.pk, rows=rows)

    await database_sync_to_async(append)()
    [live] = await carols.receive_json_from(timeout=10)  # a live batch: one frame
    assert live["seq"] == 4 and live["data"]["lines"] == ["epoch 1 done"]

    daves = await ws_connect(dave)
    await daves.send_json_to({"type": "watch", "run": run.pk, "after_seq": 0})
    assert (await daves.receive_json_from(timeout=10))["code"] == "not_found"
    await database_sync_to_async(append)()
    assert [m["seq"] for m in await carols.receive_json_from(timeout=10)] == [5]
    assert await daves.receive_nothing(timeout=1)
    await carols.disconnect()
    await daves.disconnect()


async def test_an_instructor_socket_hears_nothing_of_a_students_runs_it_does_not_watch(alice, carol, courses):
    run = await database_sync_to_async(make_run)(alice, design_name="Alicenet", status=Run.Status.RUNNING)
    alices, carols = await ws_connect(alice), await ws_connect(carol)

    def finish() -> None:
        rows = services.events_append(run_id=run.pk, events=[("run.done", {"status": "cancelled"})])
        services.events_publish(owner_id=alice.pk, run_id=run.pk, rows=rows)

    await database_sync_to_async(finish)()
    # alice's other pages hear of the status change as a summary; carol's socket hears nothing.
    summary = await alices.receive_json_from(timeout=10)
    assert summary["type"] == "run.done" and summary["summary"] is True and "seq" not in summary
    assert await carols.receive_nothing(timeout=1)
    await alices.disconnect()
    await carols.disconnect()
