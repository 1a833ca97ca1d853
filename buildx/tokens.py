"""API clients' access tokens where DRF does not look: the live stream (``/ws/``) and the run's event
stream (Server-Sent Events).

An access token is the allauth headless JWT that ``/api/auth/app/v1/auth/login`` gives. It is checked
exactly as the API checks it (DRF's ``JWTTokenAuthentication``: the signature, the expiry, that it is an
access token, and, with stateful validation on, that the session behind it is still open and still its
user's, an active one), so logging out ends a token's sockets and streams as it ends its API calls.

Tokens travel in headers and messages only, never in a URL: URLs end up in access logs, proxies' logs
and browser history.

- HTTP (the SSE stream): ``Authorization: Bearer <token>``, as the rest of the API.
- WebSocket: a client opts in by offering the subprotocol ``buildx`` (``new WebSocket(url, ["buildx",
  ...])``). With it, the socket is a token socket: the session cookie is never used (cookies are dropped
  before anything reads them), and the token comes either as a second offered subprotocol
  ``buildx.token.<token>`` (checked at the handshake) or in the first message,
  ``{"type": "authenticate", "token": "<token>"}``, within ``WS_AUTH_SECONDS``. The server accepts with
  ``buildx`` alone, so the token is not echoed back. A token socket is closed when its token expires
  (``4401``) unless it sends a newer token of the same user the same way first.

A socket without the ``buildx`` subprotocol is a page of the site, logged in by its session (the origin
check in ``buildx.origins`` applies), as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt
from allauth.headless.contrib.rest_framework.authentication import JWTTokenAuthentication
from django.conf import settings
from rest_framework.exceptions import AuthenticationFailed

from buildx.db import read_async

# The WebSocket subprotocol of token sockets, and the prefix of the one that carries the token.
PROTOCOL = "buildx"
TOKEN_PROTOCOL_PREFIX = "buildx.token."

# Close code of a socket whose user is not known: no session, a bad or expired token, no token in time.
UNAUTHENTICATED = 4401

EXPIRED = "The access token has expired: refresh it and connect again."
INVALID = "The access token is not valid: log in again."
NO_TOKEN = 'Send {"type": "authenticate", "token": ...} first, within %d seconds.'
OTHER_USER = "A socket stays with the user it was opened for: open another one."


@dataclass(frozen=True)
class TokenUser:
    """Whose token it is, and until when it holds (epoch seconds)."""

    user: Any
    expires_at: float


@dataclass(frozen=True)
class TokenRefused:
    """Why a token opens nothing: ``expired`` or ``invalid``, and a sentence for the client."""

    code: str
    reason: str


def access_token_user(token: str) -> TokenUser | TokenRefused:
    """The user of an access token, checked as the API checks it (reads the database: call it from sync
    code, or through ``access_token_user_async``)."""
    try:
        user, payload = JWTTokenAuthentication().authenticate_credentials(token)
        user.pk  # noqa: B018 - load it here, in the thread that may query, not later on an event loop
    except AuthenticationFailed:
        return _refusal(token)
    return TokenUser(user=user, expires_at=float(payload["exp"]))


access_token_user_async: Callable[[str], Awaitable[TokenUser | TokenRefused]] = read_async(access_token_user)


def _refusal(token: str) -> TokenRefused:
    """Expired or not valid, for the client's sake only: the claims are read without trusting them (the
    token was refused either way), so a forged one learns nothing but which sentence it gets."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return TokenRefused("invalid", INVALID)
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp <= time.time():
        return TokenRefused("expired", EXPIRED)
    return TokenRefused("invalid", INVALID)


def bearer_token(headers: dict[str, str] | Any) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (``request.headers``), or None."""
    scheme, _, token = (headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


# --- WebSockets ----------------------------------------------------------------------------------


def is_token_socket(scope: dict) -> bool:
    """The handshake offers the ``buildx`` subprotocol: the socket authenticates with a token only."""
    return PROTOCOL in scope.get("subprotocols", ())


def offered_token(scope: dict) -> str | None:
    for protocol in scope.get("subprotocols", ()):
        if protocol.startswith(TOKEN_PROTOCOL_PREFIX):
            return protocol.removeprefix(TOKEN_PROTOCOL_PREFIX)
    return None


@dataclass
class SocketAuth:
    """Who a socket is, as decided at its handshake or by its ``authenticate`` message.

    ``subprotocol``: what to accept the socket with (``buildx`` for a token socket, None for a page).
    ``user``: None until known. ``refusal``: a reason to close with ``UNAUTHENTICATED``.
    ``expires_at``: a token socket's deadline (its token's expiry, or before its first message the time
    it has to send one); None for a page's socket, which its session keeps.
    """

    subprotocol: str | None
    user: Any = None
    refusal: str | None = None
    expires_at: float | None = None
    timer: asyncio.Task | None = None

    @property
    def waiting(self) -> bool:
        """A token socket that has not sent its token yet."""
        return self.user is None and self.refusal is None and self.subprotocol is not None

    def take(self, result: TokenUser | TokenRefused) -> None:
        if isinstance(result, TokenRefused):
            self.refusal = result.reason
        elif self.user is not None and self.user.pk != result.user.pk:
            self.refusal = OTHER_USER
        else:
            self.user, self.expires_at = result.user, result.expires_at

    def close_when_due(self, close: Callable[[str], Awaitable[None]]) -> None:
        """Call ``close(reason)`` at ``expires_at`` (replacing an earlier timer); ``cancel()`` stops it."""
        self.cancel()
        if self.expires_at is None:
            return
        reason = EXPIRED if self.user is not None else NO_TOKEN % settings.WS_AUTH_SECONDS
        delay = max(0.0, self.expires_at - time.time())

        async def wait_then_close() -> None:
            await asyncio.sleep(delay)
            await close(reason)

        self.timer = asyncio.get_running_loop().create_task(wait_then_close())

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


async def socket_auth(scope: Any) -> SocketAuth:  # Channels' scope: a TypedDict in the stubs
    """Who a socket is at its handshake: the page's session user, a token socket with its token's user
    (or the reason it is refused), or a token socket that has ``WS_AUTH_SECONDS`` to send its token."""
    if not is_token_socket(scope):
        user = scope.get("user")
        return SocketAuth(None, user=user if user is not None and user.is_authenticated else None)
    auth = SocketAuth(PROTOCOL)
    token = offered_token(scope)
    if token is None:
        auth.expires_at = time.time() + settings.WS_AUTH_SECONDS
    else:
        auth.take(await access_token_user_async(token))
    return auth


async def authenticate_message(auth: SocketAuth, content: dict) -> None:
    """A token socket's ``{"type": "authenticate", "token"}``: its first message, or a newer token of
    the same user before the last one expires. Sets ``auth.user`` or ``auth.refusal``."""
    token = content.get("token")
    if not isinstance(token, str) or not token:
        auth.refusal = INVALID
        return
    auth.take(await access_token_user_async(token))
