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


def communicator(
    *, cookie: str | None = None, origin: str | None = "http://testserver", host: str = "testserver", extra=()
) -> WebsocketCommunicator:
    headers = [(b"host", host.encode()), *extra]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
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


async def handshake(**kwargs) -> bool:
    ws = communicator(**kwargs)
    connected, _ = await ws.connect()
    await ws.disconnect()
    return connected


@pytest.mark.django_db(transaction=True)
async def test_a_page_on_another_port_of_the_same_host_cannot_open_a_socket(alice_session_cookie, settings):
    settings.ALLOWED_HOSTS = ["localhost"]
    site = {"cookie": alice_session_cookie, "host": "localhost:8000"}

    assert await handshake(origin="http://localhost:8000", **site) is True  # positive control
    assert await handshake(origin="http://localhost:9999", **site) is False
    assert await handshake(origin="http://localhost", **site) is False
    assert await handshake(origin="https://localhost:8000", **site) is False  # another scheme


@pytest.mark.django_db(transaction=True)
async def test_a_handshake_without_an_origin_or_with_a_null_one_is_refused(alice_session_cookie):
    assert await handshake(cookie=alice_session_cookie, origin=None) is False
    assert await handshake(cookie=alice_session_cookie, origin="null") is False


@pytest.mark.django_db(transaction=True)
async def test_a_host_outside_allowed_hosts_is_refused_even_when_the_origin_matches_it(alice_session_cookie):
    # DNS rebinding: evil.example resolves to this server, so its page's Origin and Host agree.
    assert (
        await handshake(cookie=alice_session_cookie, host="evil.example", origin="http://evil.example")
        is False
    )


@pytest.mark.django_db(transaction=True)
async def test_behind_the_tls_proxy_an_https_page_of_the_site_opens_a_socket(alice_session_cookie, settings):
    settings.ALLOWED_HOSTS = ["buildx.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proxied = {"cookie": alice_session_cookie, "host": "buildx.example.com"}
    tls = [(b"x-forwarded-proto", b"https")]

    assert await handshake(origin="https://buildx.example.com", extra=tls, **proxied) is True
    assert await handshake(origin="http://buildx.example.com", extra=tls, **proxied) is False
    assert await handshake(origin="https://buildx.example.com:8443", extra=tls, **proxied) is False


@pytest.mark.django_db(transaction=True)
async def test_an_origin_in_csrf_trusted_origins_may_open_a_socket(alice_session_cookie, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com", "https://*.school.example"]

    assert await handshake(cookie=alice_session_cookie, origin="https://app.example.com") is True
    assert await handshake(cookie=alice_session_cookie, origin="https://lab.school.example") is True
    assert await handshake(cookie=alice_session_cookie, origin="https://app.example.com:444") is False
    assert await handshake(cookie=alice_session_cookie, origin="http://app.example.com") is False
