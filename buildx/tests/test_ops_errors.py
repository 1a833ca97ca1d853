"""Sentry is off without SENTRY_DSN, and what it would send keeps the user's id and nothing else of them."""

from __future__ import annotations

from buildx.apps import scrub_event, sentry_init


def test_sentry_stays_off_without_a_dsn(settings):
    settings.SENTRY_DSN = ""
    assert sentry_init() is False


def test_an_event_keeps_the_user_id_and_loses_personal_data_and_the_request_body():
    event = {
        "user": {"id": 7, "email": "alice@example.com", "ip_address": "10.1.2.3", "username": "alice"},
        "request": {
            "url": "https://buildx.example.com/api/v1/runs/",
            "method": "POST",
            "headers": {"Authorization": "Bearer secret-token", "Cookie": "sessionid=abc"},
            "cookies": {"sessionid": "abc"},
            "data": {"password": "canary-password"},
            "query_string": "token=secret",
            "env": {"REMOTE_ADDR": "10.1.2.3"},
        },
        "tags": {"run_id": 42},
    }
    scrubbed = scrub_event(event, {})
    assert scrubbed["user"] == {"id": 7}
    assert scrubbed["request"] == {"url": "https://buildx.example.com/api/v1/runs/", "method": "POST"}
    assert scrubbed["tags"] == {"run_id": 42}
    text = repr(scrubbed)
    for secret in ("secret-token", "sessionid", "canary-password", "alice@example.com", "10.1.2.3"):
        assert secret not in text
