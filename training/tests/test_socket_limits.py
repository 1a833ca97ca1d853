"""The WebSocket under abuse: replays of huge runs in bounded frames, and caps on open sockets."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import Client

from training.models import Run, RunEvent
from training.tests.conftest import make_design, ws_connect

pytestmark = pytest.mark.django_db(transaction=True)


def store_run_with_events(owner, sizes: list[int]) -> Run:
    """A finished run whose stored log events carry ``sizes[i]`` characters of text each."""
    version, artifact = make_design(owner, epochs=1)
    run = Run.objects.create(
        owner=owner,
        design_version=version,
        code_artifact=artifact,
        dataset="digits",
        status=Run.Status.SUCCEEDED,
    )
    RunEvent.objects.bulk_create(
        RunEvent(
            run=run, seq=i + 1, kind=RunEvent.Kind.LOG, payload={"stream": "stdout", "lines": ["x" * size]}
        )
        for i, size in enumerate(sizes)
    )
    run.last_seq = len(sizes)
    run.save(update_fields=["last_seq"])
    return run


def stored(run_id: int) -> list[dict]:
    return [e.as_message() for e in RunEvent.objects.filter(run_id=run_id).order_by("seq")]


async def test_a_replay_of_huge_events_comes_in_bounded_frames_each_event_once_in_order(alice, settings):
    limit = settings.WS_REPLAY_PAGE_BYTES = 256 * 1024
    # More than one database page (500 events): 10 kB lines, with a 400 kB one now and then.
    sizes = [400_000 if i % 97 == 0 else 10_000 for i in range(620)]
    run = await database_sync_to_async(store_run_with_events)(alice, sizes)
    ws = await ws_connect(alice)

    await ws.send_json_to({"type": "watch", "run": run.pk, "after_seq": 0})
    frames, events = [], []
    while True:
        text = await ws.receive_from(timeout=30)
        message = json.loads(text)
        if isinstance(message, dict) and message.get("type") == "watching":
            break
        frames.append(text)
        events += message
    await ws.disconnect()

    assert events == await database_sync_to_async(stored)(run.pk)  # each once, in order, unchanged
    assert message == {"type": "watching", "run": run.pk, "last_seq": 620}
    oversized = [
        len(text.encode()) for text in frames if len(text.encode()) > limit and text.count('"seq"') > 1
    ]
    assert oversized == []  # only a frame of one event may be larger than the limit
    assert len(frames) < len(events) // 10  # frames are filled, not one event each


# --- Caps on open sockets ---------------------------------------------------------------------------


SAME_ORIGIN = [(b"origin", b"http://testserver"), (b"host", b"testserver")]


def session_cookie(user) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    return (
        b"cookie",
        f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode(),
    )


async def closed_with(ws) -> dict | None:
    """The close message a socket got right after its handshake, or None while it stays open."""
    if await ws.receive_nothing(timeout=0.1):
        return None
    message = await ws.receive_output(timeout=1)
    assert message["type"] == "websocket.close", message
    return message


async def open_socket(user):
    ws = await ws_connect(user)  # the handshake succeeds even over a cap: the close follows it
    return ws, await closed_with(ws)


async def test_a_socket_over_the_users_cap_is_closed_with_4429_and_a_reason(alice, bob, settings):
    settings.WS_MAX_PER_USER = 3
    alices = [await ws_connect(alice) for _ in range(3)]
    for ws in alices:
        assert await closed_with(ws) is None

    fourth, closed = await open_socket(alice)
    assert closed == {
        "type": "websocket.close",
        "code": 4429,
        "reason": "Too many open connections: close other BuildX tabs",
    }
    await fourth.disconnect()
    bobs, closed = await open_socket(bob)  # a cap per user: bob is not alice
    assert closed is None

    await alices.pop().disconnect()  # a tab closed gives its slot back
    again, closed = await open_socket(alice)
    assert closed is None
    await again.send_json_to({"type": "ping"})
    assert (await again.receive_json_from(timeout=5))["type"] == "pong"
    for ws in [*alices, again, bobs]:
        await ws.disconnect()


async def test_refused_and_failed_connects_take_no_slot(alice, settings, monkeypatch):
    from channels.layers import get_channel_layer
    from channels.testing import WebsocketCommunicator

    from buildx.asgi import application

    settings.WS_MAX_PER_USER = 2
    for _ in range(3):
        anonymous = WebsocketCommunicator(application, "/ws/", headers=SAME_ORIGIN)
        assert (await anonymous.connect())[1] == 4401
        await anonymous.disconnect()
    held = [await ws_connect(alice) for _ in range(2)]
    for _ in range(3):
        refused, closed = await open_socket(alice)
        assert closed["code"] == 4429
        await refused.disconnect()
    for ws in held:
        await ws.disconnect()

    # A connect that fails half-way (Redis lost while joining the user's group) gives its slot back.
    layer = get_channel_layer()

    async def redis_is_gone(*args, **kwargs):
        raise ConnectionError("Redis is gone")

    monkeypatch.setattr(layer, "group_add", redis_is_gone)
    cookie = await database_sync_to_async(session_cookie)(alice)
    ws = WebsocketCommunicator(application, "/ws/", headers=[*SAME_ORIGIN, cookie])
    await ws.send_input({"type": "websocket.connect"})
    with pytest.raises(ConnectionError):
        # In memory the consumer ends at once with the error; channels-redis's receive keeps it alive
        # until it is cancelled at the timeout, which then raises the error.
        await ws.wait(timeout=5)
    monkeypatch.undo()

    # Nothing leaked: exactly the cap opens again.
    sockets = [await open_socket(alice) for _ in range(3)]
    assert [closed["code"] if closed else "open" for _ws, closed in sockets] == ["open", "open", 4429]
    for ws, _closed in sockets:
        await ws.disconnect()


async def test_a_socket_over_the_process_cap_is_closed_with_1013(alice, bob, carol, settings):
    settings.WS_MAX_PER_PROCESS = 2
    first, second = await ws_connect(alice), await ws_connect(bob)

    third, closed = await open_socket(carol)
    assert closed["code"] == 1013 and "try again" in closed["reason"]
    await third.disconnect()
    await first.disconnect()
    fourth, closed = await open_socket(carol)
    assert closed is None
    for ws in (second, fourth):
        await ws.disconnect()


# Another Daphne process, as far as the counts go: its own interpreter and loop, the same Redis.
OTHER_PROCESS = """
import asyncio, sys, types
import django

django.setup()
from django.conf import settings

settings.CACHES["default"]["KEY_PREFIX"] = sys.argv[1]  # the test's namespace
from channels.testing import WebsocketCommunicator

from training.consumers import EventsConsumer


async def main(user_id, count):
    sockets = []
    for _ in range(count):
        ws = WebsocketCommunicator(EventsConsumer.as_asgi(), "/ws/")
        ws.scope["user"] = types.SimpleNamespace(id=user_id, pk=user_id, is_authenticated=True)
        assert (await ws.connect(timeout=30))[0] and await ws.receive_nothing(timeout=0.1)
        sockets.append(ws)
    print("open", flush=True)
    await asyncio.sleep(3600)


asyncio.run(main(int(sys.argv[2]), int(sys.argv[3])))
"""


@pytest.mark.skipif(not settings.REDIS_URL, reason="one process: the embedded mode counts in memory")
async def test_sockets_open_in_another_process_count_and_a_crashed_ones_come_back(alice, settings, tmp_path):
    settings.WS_MAX_PER_USER = 2
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_PROCESS, settings.CACHES["default"]["KEY_PREFIX"], str(alice.pk), "2"],
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "other.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    try:
        assert other.stdout.readline() == b"open\n", (tmp_path / "other.log").read_text()
        refused, closed = await open_socket(alice)
        assert closed["code"] == 4429  # the two tabs served by the other process count here
        await refused.disconnect()

        other.kill()  # the other process crashes: its sockets never say goodbye
        other.wait(timeout=10)
        refused, closed = await open_socket(alice)
        assert closed["code"] == 4429  # still counted, until their heartbeats are missed
        await refused.disconnect()
    finally:
        other.kill()
        other.wait(timeout=10)

    # Three missed heartbeats of 0.1 s, rather than of 30 s: both entries were last seen before the kill.
    settings.WS_HEARTBEAT_SECONDS = 0.1
    await asyncio.sleep(0.5)
    first, closed = await open_socket(alice)
    assert closed is None
    settings.WS_HEARTBEAT_SECONDS = 30  # so that no live socket's entry lapses on a slow machine
    second, closed = await open_socket(alice)
    assert closed is None
    third, closed = await open_socket(alice)
    assert closed["code"] == 4429  # exactly the cap again: the dead process's entries are gone
    for ws in (first, second, third):
        await ws.disconnect()
