"""WebSocket routes. Every app's consumers are mounted under /ws/."""

from __future__ import annotations

from django.urls import path

from training.consumers import EventsConsumer

websocket_urlpatterns = [
    # Channels' documented routing; django-stubs types path() for Django views only.
    path("ws/", EventsConsumer.as_asgi()),  # type: ignore[arg-type]
]
