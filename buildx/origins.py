"""The WebSocket door's origin check: a socket is opened by a page of this site, or refused.

Browsers send the session cookie with a WebSocket handshake whatever page opens it (there is no CORS
for sockets), so this check is what stops another site's page from using a student's session
(cross-site WebSocket hijacking). Channels' AllowedHostsOriginValidator compares the Origin's host
name with ALLOWED_HOSTS and ignores its scheme and port: any page on ``http://localhost:9999`` could
open a logged-in socket to a site on ``localhost:8000``. Here it is Django's CSRF origin check, for
sockets: the Origin must be the request's own scheme, host and port (its Host header, itself one of
ALLOWED_HOSTS), or one of CSRF_TRUSTED_ORIGINS. A handshake without an Origin is refused too: every
browser sends one, and other clients can send one.

Token sockets (the handshake offers the ``buildx`` subprotocol: ``buildx.tokens``) authenticate with an
access token and never with the session: their cookies are dropped here, before anything reads them, so
there is no session to hijack. Their Host must still be one of ours; an Origin, when sent (a browser
sends one, other clients need not), must be the site's, a trusted one, or one of CORS_ALLOWED_ORIGINS:
the pages allowed to call the API.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from buildx.tokens import is_token_socket

DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> tuple[str, str, int] | None:
    """``("https", "buildx.example.com", 443)`` for an origin; None for anything else ("null")."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port
    except ValueError:  # a port that is not a number
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def _headers(scope: dict, name: bytes) -> list[str]:
    return [value.decode("latin1") for key, value in scope.get("headers", []) if key.lower() == name]


def _is_secure(scope: dict) -> bool:
    """As ``HttpRequest.is_secure()``: the scope's scheme, or the proxy's header where one is trusted."""
    if scope.get("scheme") in ("wss", "https"):
        return True
    proxy = settings.SECURE_PROXY_SSL_HEADER  # ("HTTP_X_FORWARDED_PROTO", "https") behind nginx
    if proxy:
        header, secure_value = proxy
        name = header.removeprefix("HTTP_").replace("_", "-").lower().encode()
        values = _headers(scope, name)
        return bool(values) and values[0].split(",", 1)[0].strip() == secure_value
    return False


def own_origin(scope: dict) -> tuple[str, str, int] | None:
    """The origin the handshake was sent to, from its Host header; None when the host is not ours."""
    hosts = _headers(scope, b"host")
    if len(hosts) != 1:
        return None
    domain, _port = split_domain_port(hosts[0])
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # as Django's HttpRequest.get_host()
    # A host outside ALLOWED_HOSTS is DNS rebinding: evil.example resolving to this server.
    if not domain or not validate_host(domain, allowed):
        return None
    return origin_of(f"{'https' if _is_secure(scope) else 'http'}://{hosts[0]}")


def trusted_origin(origin: str) -> bool:
    """One of CSRF_TRUSTED_ORIGINS: exact, or ``https://*.example.com`` for its subdomains."""
    parsed = origin_of(origin)
    if parsed is None:
        return False
    netloc = urlsplit(origin.strip().lower()).netloc
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        if "*" in entry:  # as CsrfViewMiddleware: the netloc after "*" and its subdomains
            pattern = urlsplit(entry.lower())
            if pattern.scheme == parsed[0] and is_same_domain(netloc, pattern.netloc.lstrip("*")):
                return True
        elif origin_of(entry) == parsed:
            return True
    return False


def same_origin(scope: dict) -> bool:
    origins = _headers(scope, b"origin")
    if len(origins) != 1:
        return False
    origin = origin_of(origins[0])
    return origin is not None and (origin == own_origin(scope) or trusted_origin(origins[0]))


def api_client_origin(scope: dict) -> bool:
    """A token socket's handshake: sent to one of our hosts, from no page, or from a page that may use
    the API (the site's own, a trusted origin, or one of CORS_ALLOWED_ORIGINS)."""
    if own_origin(scope) is None:
        return False
    origins = _headers(scope, b"origin")
    if not origins:
        return True
    if len(origins) != 1 or origin_of(origins[0]) is None:
        return False
    allowed = {origin_of(entry) for entry in settings.CORS_ALLOWED_ORIGINS}
    return same_origin(scope) or origin_of(origins[0]) in allowed


class SameOriginValidator:
    """ASGI middleware: a page's WebSocket handshake from another origin is refused (HTTP 403); a token
    socket's loses its cookies, and is refused from a page that may not use the API."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            if is_token_socket(scope):
                if not api_client_origin(scope):
                    return await WebsocketDenier.as_asgi()(scope, receive, send)
                headers = [
                    (key, value) for key, value in scope.get("headers", []) if key.lower() != b"cookie"
                ]
                scope = {**scope, "headers": headers}
            elif not same_origin(scope):
                return await WebsocketDenier.as_asgi()(scope, receive, send)
        return await self.application(scope, receive, send)
