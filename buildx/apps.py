"""The platform layer's app: error tracking (Sentry) when SENTRY_DSN is set, and the scrape-time
metrics collectors."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.conf import settings

# Fields of an event that may hold what a person typed or who they are: never sent to Sentry.
SCRUBBED_REQUEST_FIELDS = ("cookies", "data", "headers", "query_string", "env")


def scrub_event(event: Any, hint: dict[str, Any]) -> Any:
    """Keep the user's id and drop the rest of who they are and what they sent (send_default_pii is
    off too; this also covers what an integration adds on its own)."""
    user = event.get("user")
    if isinstance(user, dict):
        event["user"] = {"id": user["id"]} if "id" in user else {}
    request = event.get("request")
    if isinstance(request, dict):
        for field in SCRUBBED_REQUEST_FIELDS:
            request.pop(field, None)
    return event


def sentry_init() -> bool:
    """Start Sentry's Django and Dramatiq integrations when SENTRY_DSN is set; whether it did."""
    if not settings.SENTRY_DSN:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.dramatiq import DramatiqIntegration

    sentry_sdk.init(
        dsn=settings.SENTRY_DSN,
        environment=settings.SENTRY_ENVIRONMENT,
        sample_rate=settings.SENTRY_SAMPLE_RATE,
        traces_sample_rate=settings.SENTRY_TRACES_SAMPLE_RATE,
        send_default_pii=False,
        max_request_body_size="never",
        integrations=[DjangoIntegration(), DramatiqIntegration()],
        before_send=scrub_event,
    )
    return True


class BuildxConfig(AppConfig):
    name = "buildx"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        sentry_init()
