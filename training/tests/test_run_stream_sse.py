"""GET /api/v1/runs/<id>/stream/: a run's events as Server-Sent Events, resumable, for the session and
for access tokens, to the people who may view the run and nobody else."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.test import AsyncClient, Client

from accounts import services as account_services
from buildx.test import PASSWORD
from training import limits, services
from training.models import Run, RunEvent
from training.tests.conftest import make_design

pytestmark = pytest.mark.django_db(transaction=True)

AUTH = "/api/auth/app/v1"


@pytest.fixture(autouse=True)
def _quick(settings):
    settings.SSE_POLL_SECONDS = 0.05
    settings.SSE_KEEPALIVE_SECONDS = 15
    settings.SSE_MAX_SECONDS = 30


def _queued_run(user, *, logs: int = 0) -> int:
    version, artifact = make_design(user)
    run = services.run_create(owner=user, version=version, artifact=artifact)
    _log(run.pk, logs)
    return run.pk


def _log(run_id: int, n: int) -> None:
    if n:
        services.events_append(
            run_id=run_id,
            events=[("run.log", {"stream": "stdout", "lines": [f"line {i}"]}) for i in range(n)],
        )


def _finish(run_id: int) -> None:
    services.run_stop(run=Run.objects.get(pk=run_id))  # a queued run is cancelled at once: run.done


def _stored(run_id: int) -> list[dict]:
    return [e.as_message() for e in RunEvent.objects.filter(run_id=run_id).order_by("seq")]


async def session(user) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(user)
    return client


def _token(email: str) -> str:
    response = Client().post(
        f"{AUTH}/auth/login", {"email": email, "password": PASSWORD}, content_type="application/json"
    )
    return response.json()["meta"]["access_token"]


queued_run = database_sync_to_async(_queued_run)
log = database_sync_to_async(_log)
finish = database_sync_to_async(_finish)
stored = database_sync_to_async(_stored)
token_of = database_sync_to_async(_token)


def parse(text: str) -> list[dict]:
    """SSE text as a list of {"id", "event", "data"} (comments as {"comment"})."""
    messages = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        message: dict = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                message["comment"] = line[1:].strip()
            else:
                field, _, value = line.partition(": ")
                message[field] = value
        messages.append(message)
    return messages


async def read(response, *, until=lambda messages: False, timeout: float = 20) -> list[dict]:
    """The stream's messages, until it ends or ``until(messages)``."""
    text = ""
    chunks = aiter(response.streaming_content)
    deadline = time.monotonic() + timeout
    while True:
        try:
            chunk = await asyncio.wait_for(anext(chunks), timeout=max(0.01, deadline - time.monotonic()))
        except StopAsyncIteration:
            return parse(text)
        text += chunk.decode()
        if until(parse(text)):
            await chunks.aclose()
            return parse(text)


def events_of(messages: list[dict]) -> list[dict]:
    return [json.loads(m["data"]) for m in messages if "id" in m]


async def test_a_finished_runs_stream_is_its_stored_events_then_end(alice):
    run_id = await queued_run(alice, logs=3)
    await finish(run_id)
    client = await session(alice)

    response = await client.get(f"/api/v1/runs/{run_id}/stream/")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    messages = await read(response)
    assert messages[0] == {"retry": "2000"}
    events = events_of(messages)
    assert events == await stored(run_id)
    assert [m["id"] for m in messages if "id" in m] == [str(e["seq"]) for e in events]
    assert [m["event"] for m in messages if "id" in m] == [e["type"] for e in events]
    assert events[-1]["type"] == "run.done"
    assert messages[-1]["event"] == "end"
    assert json.loads(messages[-1]["data"]) == {"run": run_id, "last_seq": events[-1]["seq"]}


async def test_last_event_id_resumes_after_the_last_event_seen(alice):
    run_id = await queued_run(alice, logs=4)
    await finish(run_id)
    client = await session(alice)

    resumed = await read(await client.get(f"/api/v1/runs/{run_id}/stream/", headers={"Last-Event-ID": "3"}))
    first = await read(await client.get(f"/api/v1/runs/{run_id}/stream/?after=2"))

    assert [e["seq"] for e in events_of(resumed)] == [4, 5, 6]
    assert [e["seq"] for e in events_of(first)] == [3, 4, 5, 6]
    # Nothing after the end of a finished run: 204, which tells EventSource not to reconnect.
    done = await client.get(f"/api/v1/runs/{run_id}/stream/", headers={"Last-Event-ID": "6"})
    assert done.status_code == 204
    bad = await client.get(f"/api/v1/runs/{run_id}/stream/", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400 and json.loads(bad.content)["error"]["code"] == "invalid"


async def test_a_live_run_streams_new_events_as_they_are_stored_and_ends_with_it(alice):
    run_id = await queued_run(alice)
    client = await session(alice)
    response = await client.get(f"/api/v1/runs/{run_id}/stream/")
    assert response.status_code == 200

    async def produce():
        await asyncio.sleep(0.2)
        await log(run_id, 2)
        await asyncio.sleep(0.2)
        await finish(run_id)

    producer = asyncio.create_task(produce())
    messages = await read(response)
    await producer

    events = events_of(messages)
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert [e["type"] for e in events] == ["run.status", "run.log", "run.log", "run.done"]
    assert messages[-1]["event"] == "end"


async def test_a_quiet_stream_sends_keepalives_and_ends_by_itself(alice, settings):
    settings.SSE_KEEPALIVE_SECONDS = 0.1
    settings.SSE_MAX_SECONDS = 0.6
    run_id = await queued_run(alice)
    client = await session(alice)

    started = time.monotonic()
    messages = await read(await client.get(f"/api/v1/runs/{run_id}/stream/"))

    assert time.monotonic() - started < 10
    assert [e["seq"] for e in events_of(messages)] == [1]
    assert {"comment": "keepalive"} in messages
    assert all(m.get("event") != "end" for m in messages)  # the run goes on: the client reconnects


async def test_an_access_token_opens_the_stream(alice):
    run_id = await queued_run(alice, logs=1)
    await finish(run_id)
    token = await token_of("alice@example.com")

    response = await AsyncClient().get(
        f"/api/v1/runs/{run_id}/stream/", headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 200
    assert [e["seq"] for e in events_of(await read(response))] == [1, 2, 3]


async def test_without_credentials_or_with_a_bad_token_it_is_a_401(alice):
    run_id = await queued_run(alice)
    token = await token_of("alice@example.com")
    url = f"/api/v1/runs/{run_id}/stream/"

    anonymous = await AsyncClient().get(url)
    forged = await AsyncClient().get(url, headers={"Authorization": f"Bearer {token[:-4]}abcd"})
    in_the_url = [await AsyncClient().get(f"{url}?{name}={token}") for name in ("access_token", "token")]

    assert anonymous.status_code == 401
    assert json.loads(anonymous.content)["error"]["code"] == "not_authenticated"
    assert forged.status_code == 401
    assert json.loads(forged.content)["error"] == {
        "code": "authentication_failed",
        "message": "The access token is not valid: log in again.",
    }
    # A token in the URL is not looked at (URLs are logged).
    assert [r.status_code for r in in_the_url] == [401, 401]


async def test_another_users_run_is_a_404_and_their_instructor_may_watch(alice, bob, carol, dave):
    def courses():
        course = account_services.course_create(name="DL 101", term="Spring", instructors=[carol])
        account_services.course_join(user=alice, code=course.join_code)
        account_services.course_create(name="Other", term="Spring", instructors=[dave])

    await database_sync_to_async(courses)()
    run_id = await queued_run(alice, logs=1)
    await finish(run_id)
    url = f"/api/v1/runs/{run_id}/stream/"

    for outsider in (bob, dave):
        response = await (await session(outsider)).get(url)
        assert response.status_code == 404
        assert json.loads(response.content)["error"]["code"] == "not_found"
    bob_token = await token_of("bob@example.com")
    assert (await AsyncClient().get(url, headers={"Authorization": f"Bearer {bob_token}"})).status_code == 404
    missing = await (await session(alice)).get("/api/v1/runs/999999/stream/")
    assert missing.status_code == 404

    # Positive control: alice's instructor watches her run.
    watched = await (await session(carol)).get(url)
    assert watched.status_code == 200
    assert [e["seq"] for e in events_of(await read(watched))] == [1, 2, 3]


async def test_a_stream_counts_against_the_users_open_connections(alice, settings):
    settings.WS_MAX_PER_USER = 1
    run_id = await queued_run(alice)
    held = await limits.socket_slot_take(user_id=alice.pk)  # a socket of hers, open
    client = await session(alice)
    try:
        refused = await client.get(f"/api/v1/runs/{run_id}/stream/")
        assert refused.status_code == 429
        assert json.loads(refused.content)["error"]["code"] == "too_many_connections"
    finally:
        await held.release()

    settings.SSE_MAX_SECONDS = 0.2
    response = await client.get(f"/api/v1/runs/{run_id}/stream/")
    assert response.status_code == 200
    await read(response)  # ends by itself: its slot is given back
    again = await client.get(f"/api/v1/runs/{run_id}/stream/")
    assert again.status_code == 200
    await read(again)


async def test_only_get_is_answered(alice):
    run_id = await queued_run(alice)
    client = await session(alice)
    response = await client.post(f"/api/v1/runs/{run_id}/stream/")
    assert response.status_code == 405 and response["Allow"] == "GET"
    assert json.loads(response.content)["error"]["code"] == "method_not_allowed"


async def test_a_client_that_goes_away_ends_its_stream_and_frees_its_slot(alice, settings):
    """Through the ASGI application as Daphne runs it: the disconnect cancels the stream's generator."""
    from asgiref.testing import ApplicationCommunicator

    from buildx.asgi import application

    settings.WS_MAX_PER_USER = 1
    run_id = await queued_run(alice)

    def cookie() -> str:
        client = Client()
        client.force_login(alice)
        return client.cookies[django_settings.SESSION_COOKIE_NAME].value

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/api/v1/runs/{run_id}/stream/",
        "raw_path": f"/api/v1/runs/{run_id}/stream/".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (
                b"cookie",
                f"{django_settings.SESSION_COOKIE_NAME}={await database_sync_to_async(cookie)()}".encode(),
            ),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    http = ApplicationCommunicator(application, scope)
    await http.send_input({"type": "http.request", "body": b""})
    start = await http.receive_output(timeout=10)
    assert start["type"] == "http.response.start" and start["status"] == 200
    body = b""
    while b"run.status" not in body:
        body += (await http.receive_output(timeout=10)).get("body", b"")

    await http.send_input({"type": "http.disconnect"})
    await http.wait(timeout=10)

    slot = await limits.socket_slot_take(user_id=alice.pk)  # her one connection is free again
    assert isinstance(slot, limits.SocketSlot)
    await slot.release()
