"""ASGI entry point: HTTP through Django, WebSockets through Channels (same origin, logged in)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buildx.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from buildx.origins import SameOriginValidator  # noqa: E402
from buildx.routing import websocket_urlpatterns  # noqa: E402
from buildx.ws_auth import WebSocketAuthMiddlewareStack  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # types-channels wants routes whose callback is an ASGI app, which django-stubs' path() cannot
        # return: the routes are Channels' documented `path("ws/", Consumer.as_asgi())`.
        "websocket": SameOriginValidator(
            WebSocketAuthMiddlewareStack(URLRouter(websocket_urlpatterns))  # type: ignore[arg-type]
        ),
    }
)

from designs.apps import start_validation_warm_up  # noqa: E402

start_validation_warm_up()
