"""The WebSocket's session and user, as Channels' ``AuthMiddlewareStack`` finds them, minus its send wrapper.

Channels' ``SessionMiddleware`` wraps ``send`` so that an HTTP response can save the session and set
its cookie. A WebSocket has no such message (``InstanceSessionWrapper.save_message_types`` is
``http.response.start`` only), yet every frame the socket sends went through the wrapper: two lazy
session lookups and a settings read per frame, about a tenth of a Daphne process's time when a class of
500 browsers watches a run (bench/stream.py, py-spy). Here the session is resolved the same way and
``send`` is passed through untouched.
"""

from __future__ import annotations

from channels.auth import AuthMiddleware
from channels.sessions import CookieMiddleware, InstanceSessionWrapper, SessionMiddleware


class WebSocketSessionMiddleware(SessionMiddleware):
    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await super().__call__(scope, receive, send)
        wrapper = InstanceSessionWrapper(scope, send)
        await wrapper.resolve_session()
        return await self.inner(wrapper.scope, receive, send)


def WebSocketAuthMiddlewareStack(inner):  # noqa: N802 (named as Channels' AuthMiddlewareStack)
    return CookieMiddleware(WebSocketSessionMiddleware(AuthMiddleware(inner)))
