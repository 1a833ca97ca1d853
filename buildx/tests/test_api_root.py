"""GET /api/v1/ is the API's front page: every endpoint by name, JSON for programs, HTML for people."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import get_resolver

from buildx.api import named_routes


def test_the_api_root_lists_every_endpoint_to_anyone():
    response = Client().get("/api/v1/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    links = response.json()
    assert links["runs"] == "http://testserver/api/v1/runs/"
    assert links["designs"] == "http://testserver/api/v1/designs/"
    assert links["run_events"] == "http://testserver/api/v1/runs/{pk}/events/"
    assert links["schema"] == "http://testserver/api/v1/schema/"
    assert links["auth"] == "http://testserver/api/auth/app/v1/"
    # Every named route under /api/v1/ is listed.
    api = next(r for r in get_resolver().url_patterns if str(r.pattern) == "api/v1/")
    names = {name.removeprefix("api-").replace("-", "_") for name, _ in named_routes(api.url_patterns)}
    assert names - {"root"} <= set(links)
    for url in links.values():
        assert "%7B" not in url  # placeholders stay readable


@pytest.mark.django_db
def test_a_browser_gets_the_browsable_page(alice_client):
    response = alice_client.get("/api/v1/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"/api/v1/runs/" in response.content
