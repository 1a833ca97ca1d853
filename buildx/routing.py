"""WebSocket routes. Every app's consumers are mounted under /ws/."""

from __future__ import annotations

from django.urls import path

from training.consumers import EventsConsumer

websocket_urlpatterns = [
    path("ws/", EventsConsumer.as_asgi()),
]
