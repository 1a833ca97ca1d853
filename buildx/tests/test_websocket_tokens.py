"""The live stream for API clients: an access token opens /ws/ (a subprotocol or the first message), with
the checks the API makes, never from the URL and never with the session of a token socket."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest
from allauth.headless.tokens.strategies.jwt import internal as jwt_internal
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.test import Client

from buildx import tokens
from buildx.asgi import application
from buildx.test import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

AUTH = "/api/auth/app/v1"


def _login(email: str) -> str:
    response = Client().post(
        f"{AUTH}/auth/login", {"email": email, "password": PASSWORD}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    return response.json()["meta"]["access_token"]


login = database_sync_to_async(_login)


def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def socket(
    *, protocols=(), origin: str | None = None, cookie: str | None = None, path: str = "/ws/"
) -> WebsocketCommunicator:
    headers = [(b"host", b"testserver")]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if cookie is not None:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return WebsocketCommunicator(application, path, headers=headers, subprotocols=list(protocols))


def with_token(token: str) -> list[str]:
    return [tokens.PROTOCOL, tokens.TOKEN_PROTOCOL_PREFIX + token]


async def closed_with(ws: WebsocketCommunicator, timeout: float = 5) -> tuple[int | None, str]:
    while True:
        message = await ws.receive_output(timeout=timeout)
        if message["type"] == "websocket.close":
            return message.get("code"), message.get("reason", "")


async def test_a_token_offered_as_a_subprotocol_opens_the_socket(alice):
    ws = socket(protocols=with_token(await login("alice@example.com")))
    connected, subprotocol = await ws.connect()
    assert connected is True
    assert subprotocol == "buildx"  # the token is not echoed back
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "pong"
    await ws.disconnect()


async def test_a_token_in_the_first_message_opens_the_socket(alice):
    token = await login("alice@example.com")
    ws = socket(protocols=["buildx"])
    connected, subprotocol = await ws.connect()
    assert connected is True and subprotocol == "buildx"
    await ws.send_json_to({"type": "authenticate", "token": token})
    answer = await ws.receive_json_from(timeout=5)
    assert answer["type"] == "authenticated" and answer["user"] == alice.pk
    assert answer["expires_at"] > time.time()
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "pong"
    await ws.disconnect()


async def test_a_token_socket_watches_its_users_runs_and_not_another_users(alice, bob):
    from training import services
    from training.tests.conftest import make_design

    def runs():
        own = services.run_create(
            owner=alice, version=(v := make_design(alice)[0]), artifact=v.artifacts.get()
        )
        other = services.run_create(owner=bob, version=(w := make_design(bob)[0]), artifact=w.artifacts.get())
        return own.pk, other.pk

    own, other = await database_sync_to_async(runs)()
    ws = socket(protocols=with_token(await login("alice@example.com")))
    assert (await ws.connect())[0] is True
    await ws.send_json_to({"type": "watch", "run": own, "after_seq": 0})
    replay = await ws.receive_json_from(timeout=5)
    assert [(e["run"], e["seq"], e["type"]) for e in replay] == [(own, 1, "run.status")]
    assert (await ws.receive_json_from(timeout=5)) == {"type": "watching", "run": own, "last_seq": 1}
    await ws.send_json_to({"type": "watch", "run": other, "after_seq": 0})
    assert (await ws.receive_json_from(timeout=5))["code"] == "not_found"
    await ws.disconnect()


async def test_an_expired_token_is_refused_with_4401_and_a_reason(alice, monkeypatch):
    issued_at = time.time() - 31 * 60

    class ThirtyOneMinutesAgo:
        @staticmethod
        def time() -> float:
            return issued_at

    monkeypatch.setattr(jwt_internal, "time", ThirtyOneMinutesAgo)
    token = await login("alice@example.com")
    monkeypatch.undo()

    ws = socket(protocols=with_token(token))
    assert (await ws.connect())[0] is True  # accepted, then closed: the client learns why
    assert await closed_with(ws) == (4401, tokens.EXPIRED)

    ws = socket(protocols=["buildx"])
    await ws.connect()
    await ws.send_json_to({"type": "authenticate", "token": token})
    assert await closed_with(ws) == (4401, tokens.EXPIRED)


async def test_a_forged_or_revoked_token_is_refused(alice, settings):
    token = await login("alice@example.com")
    header, payload, _signature = token.split(".")
    for bad in [f"{header}.{payload}.forged", "not-a-jwt", ""]:
        ws = socket(protocols=with_token(bad) if bad else ["buildx"])
        await ws.connect()
        if not bad:
            await ws.send_json_to({"type": "authenticate", "token": bad})
        assert await closed_with(ws) == (4401, tokens.INVALID), bad

    # Logging out ends the session behind the token: it opens nothing any more.
    def logout():
        Client().delete(f"{AUTH}/auth/session", HTTP_AUTHORIZATION=f"Bearer {token}")

    await database_sync_to_async(logout)()
    ws = socket(protocols=with_token(token))
    await ws.connect()
    assert await closed_with(ws) == (4401, tokens.INVALID)


async def test_a_token_socket_that_sends_no_token_in_time_is_closed(alice, settings):
    settings.WS_AUTH_SECONDS = 0.3
    ws = socket(protocols=["buildx"])
    assert (await ws.connect())[0] is True
    code, reason = await closed_with(ws)
    assert code == 4401 and "authenticate" in reason


async def test_a_token_socket_must_authenticate_before_anything_else(alice):
    ws = socket(protocols=["buildx"])
    await ws.connect()
    await ws.send_json_to({"type": "watch", "run": 1, "after_seq": 0})
    code, reason = await closed_with(ws)
    assert code == 4401 and "authenticate" in reason


async def test_a_token_in_the_url_opens_nothing(alice):
    token = await login("alice@example.com")
    for query in [f"token={token}", f"access_token={token}"]:
        # A page's socket: no session, so refused at the handshake whatever the URL says.
        ws = socket(path=f"/ws/?{query}", origin="http://testserver")
        assert await ws.connect() == (False, 4401)
        # A token socket: still waiting for its token, and closed when it sends anything else.
        ws = socket(path=f"/ws/?{query}", protocols=["buildx"])
        assert (await ws.connect())[0] is True
        await ws.send_json_to({"type": "ping"})
        assert (await closed_with(ws))[0] == 4401


async def test_a_token_socket_never_uses_the_session_cookie(alice):
    cookie = await database_sync_to_async(_session_cookie)(alice)
    # Positive control: the same cookie opens a page's socket.
    ws = socket(origin="http://testserver", cookie=cookie)
    assert (await ws.connect())[0] is True
    await ws.disconnect()

    # With the buildx subprotocol the cookie counts for nothing: a token is still needed.
    ws = socket(protocols=["buildx"], origin="http://testserver", cookie=cookie)
    assert (await ws.connect())[0] is True
    await ws.send_json_to({"type": "ping"})
    assert (await closed_with(ws))[0] == 4401


async def test_another_sites_page_cannot_open_a_token_socket_unless_cors_lists_it(alice, settings):
    token = await login("alice@example.com")
    ws = socket(protocols=with_token(token), origin="https://evil.example")
    assert (await ws.connect())[0] is False

    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    ws = socket(protocols=with_token(token), origin="https://app.example.com")
    assert (await ws.connect())[0] is True
    await ws.disconnect()
    ws = socket(protocols=with_token(token), origin="https://evil.example")
    assert (await ws.connect())[0] is False


async def test_the_users_socket_cap_counts_token_sockets_too(alice, settings):
    settings.WS_MAX_PER_USER = 1
    cookie = await database_sync_to_async(_session_cookie)(alice)
    page = socket(origin="http://testserver", cookie=cookie)
    assert (await page.connect())[0] is True

    ws = socket(protocols=with_token(await login("alice@example.com")))
    assert (await ws.connect())[0] is True
    assert (await closed_with(ws))[0] == 4429
    await page.disconnect()


def expiry(token: str) -> float:
    return jwt.decode(token, options={"verify_signature": False})["exp"]


async def test_a_token_socket_closes_when_its_token_expires(alice, settings):
    settings.HEADLESS_JWT_ACCESS_TOKEN_EXPIRES_IN = 2
    ws = socket(protocols=with_token(await login("alice@example.com")))
    assert (await ws.connect())[0] is True
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "pong"
    assert (await closed_with(ws, timeout=10)) == (4401, tokens.EXPIRED)


async def test_a_newer_token_of_the_same_user_keeps_the_socket_open(alice, bob, settings):
    settings.HEADLESS_JWT_ACCESS_TOKEN_EXPIRES_IN = 2
    first = await login("alice@example.com")
    ws = socket(protocols=with_token(first))
    assert (await ws.connect())[0] is True
    settings.HEADLESS_JWT_ACCESS_TOKEN_EXPIRES_IN = 60
    await ws.send_json_to({"type": "authenticate", "token": await login("alice@example.com")})
    assert (await ws.receive_json_from(timeout=5))["type"] == "authenticated"
    await asyncio.sleep(max(0.0, expiry(first) - time.time()) + 0.5)
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "pong"  # the first token's expiry has passed
    await ws.disconnect()

    # Another user's token does not take a socket over.
    ws = socket(protocols=with_token(await login("alice@example.com")))
    await ws.connect()
    await ws.send_json_to({"type": "authenticate", "token": await login("bob@example.com")})
    assert (await closed_with(ws)) == (4401, tokens.OTHER_USER)


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the connection pool is PostgreSQL's (CI runs it)"
)
async def test_token_sockets_give_their_database_connections_back(alice):
    """Each token check borrows a connection: a socket that kept it made the 11th socket of a web process
    (a pool of 10) wait 10 s for one and fail."""

    def checked_out() -> int:
        stats = connection.pool.get_stats()  # type: ignore[attr-defined]
        return stats["pool_size"] - stats["pool_available"]

    token = await login("alice@example.com")
    before = checked_out()
    for _ in range(connection.pool.max_size + 2):
        ws = socket(protocols=with_token(token))
        connected, _protocol = await ws.connect()
        assert connected is True
        await ws.send_json_to({"type": "authenticate", "token": token})  # a second check, by message
        assert (await ws.receive_json_from(timeout=5))["type"] == "authenticated"
        await ws.disconnect()
    assert checked_out() == before
