"""Sentry is off without SENTRY_DSN, and what it would send keeps the user's id and nothing else of them."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler

from django.conf import settings

from buildx.apps import scrub_event, sentry_init
from buildx.testing.local_http import LocalHTTPServer


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


class SentryIngest(LocalHTTPServer):
    """Sentry's ingest endpoint as far as the SDK uses it: envelopes POSTed to /api/<project>/envelope/."""

    name = "sentry-ingest"

    def __init__(self) -> None:
        self.envelopes: list[bytes] = []

    class handler(BaseHTTPRequestHandler):
        owner: SentryIngest

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            self.owner.envelopes.append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args) -> None:
            pass


REPORT_AN_ERROR = """
import django
django.setup()
import sentry_sdk
from buildx import logs
logs.bind(request_id="req-sentry-1", user_id=7, run_id=42)
sentry_sdk.set_user({"id": 7, "email": "alice@example.com", "ip_address": "10.1.2.3"})
try:
    raise RuntimeError("training blew up")
except RuntimeError:
    sentry_sdk.capture_exception()
sentry_sdk.flush(timeout=20)
"""


def test_with_a_dsn_an_error_reaches_sentry_with_the_ids_as_tags_and_no_personal_data():
    with SentryIngest() as ingest:
        host = ingest.origin.removeprefix("http://")
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(DJANGO_SETTINGS_MODULE="buildx.settings", SENTRY_DSN=f"http://publickey@{host}/1")
        done = subprocess.run(
            [sys.executable, "-c", REPORT_AN_ERROR],
            cwd=settings.BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    events = [
        json.loads(line)
        for envelope in ingest.envelopes
        for line in envelope.split(b"\n")
        if line.startswith(b"{") and b'"exception"' in line
    ]
    assert len(events) == 1
    event = events[0]
    assert event["exception"]["values"][0]["value"] == "training blew up"
    assert {"request_id": "req-sentry-1", "user_id": "7", "run_id": "42"}.items() <= {
        k: str(v) for k, v in event["tags"].items()
    }.items()
    assert event["user"] == {"id": 7}
    assert b"alice@example.com" not in b"".join(ingest.envelopes)
    assert b"10.1.2.3" not in b"".join(ingest.envelopes)
