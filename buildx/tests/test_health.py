from __future__ import annotations

import socket

import pytest
from django.db import connection
from django.test import override_settings


def closed_port() -> int:
    """A local port with nothing listening: what a stopped Redis looks like from here."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db
def test_healthz_says_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_ready_when_the_database_redis_and_broker_answer(client, settings):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == {"ok": True, "engine": connection.vendor}
    assert body["checks"]["broker"]["ok"] is True
    if settings.REDIS_URL:
        assert body["checks"]["redis"] == {"ok": True}
        assert body["checks"]["broker"]["kind"] == "RedisBroker"
        assert body["embedded"] == []


@pytest.mark.django_db
def test_readyz_reports_a_stopped_redis_as_not_ready(client):
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0"):
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["redis"]["ok"] is False
    assert "error" in body["checks"]["redis"]
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_readyz_in_embedded_mode_names_the_embedded_parts(client):
    with override_settings(REDIS_URL=""):
        body = client.get("/readyz").json()
    assert "redis" not in body["checks"]
    assert "channel layer (in-memory)" in body["embedded"]
    assert "worker (in-process)" in body["embedded"]
    assert ("database (SQLite)" in body["embedded"]) == (connection.vendor == "sqlite")


@pytest.mark.django_db
def test_home_page_offers_sign_up_and_log_in(client):
    response = client.get("/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "/accounts/signup/" in body
    assert "/accounts/login/" in body


@pytest.mark.django_db
def test_home_sends_a_logged_in_user_to_the_dashboard(alice_client):
    response = alice_client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"


def test_readyz_says_what_isolation_a_sandbox_gets_here(client):
    body = client.get("/readyz").json()

    assert body["sandbox"]["mode"] == "bwrap"
    assert body["sandbox"]["cgroups"] == "v1"  # this machine mounts memory, pids and cpu as v1
    assert body["sandbox"]["uid_pool"][1] > 0
    assert body["sandbox"]["problems"] == []


def test_readyz_says_when_control_groups_are_missing(client, settings):
    settings.BUILDX_CGROUPS = "off"
    body = client.get("/readyz").json()

    assert body["sandbox"]["cgroups"] is None
    assert any("memory is limited per process" in problem for problem in body["sandbox"]["problems"])
