"""The WebSocket door: same origin and logged in, or refused."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from buildx.asgi import application


@pytest.fixture
def alice_session_cookie(alice) -> str:
    client = Client()
    client.force_login(alice)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def communicator(*, cookie: str | None = None, origin: str = "http://testserver") -> WebsocketCommunicator:
    headers = [(b"host", b"testserver"), (b"origin", origin.encode())]
    if cookie:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return WebsocketCommunicator(application, "/ws/", headers=headers)


@pytest.mark.django_db(transaction=True)
async def test_an_anonymous_websocket_is_refused():
    ws = communicator()
    connected, code = await ws.connect()
    assert connected is False
    assert code == 4401
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_logged_in_websocket_is_accepted_and_answers_a_ping(alice_session_cookie):
    ws = communicator(cookie=alice_session_cookie)
    connected, _ = await ws.connect()
    assert connected is True
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "pong"
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_websocket_from_another_origin_is_refused_even_with_a_session(alice_session_cookie):
    ws = communicator(cookie=alice_session_cookie, origin="https://evil.example")
    connected, _ = await ws.connect()
    assert connected is False
    await ws.disconnect()
