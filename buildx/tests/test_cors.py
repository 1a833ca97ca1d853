"""CORS: pages of the origins in CORS_ALLOWED_ORIGINS may call the API with a token; no other, and none
by default; never with cookies."""

from __future__ import annotations

import pytest
from django.test import Client

APP = "https://app.example.com"


def preflight(origin: str, path: str = "/api/v1/runs/"):
    return Client().options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,content-type",
    )


def test_by_default_no_origin_is_allowed():
    assert "access-control-allow-origin" not in preflight(APP).headers
    assert "access-control-allow-origin" not in Client().get("/api/v1/", HTTP_ORIGIN=APP).headers


def test_a_listed_origin_may_call_the_api_with_a_token(settings):
    settings.CORS_ALLOWED_ORIGINS = [APP]
    response = preflight(APP)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == APP
    assert "authorization" in response["Access-Control-Allow-Headers"]
    assert "POST" in response["Access-Control-Allow-Methods"]
    assert "access-control-allow-credentials" not in response.headers  # tokens, not cookies

    answer = Client().get("/api/v1/", HTTP_ORIGIN=APP)
    assert answer["Access-Control-Allow-Origin"] == APP
    assert "Retry-After" in answer["Access-Control-Expose-Headers"]


def test_an_unlisted_origin_gets_no_allow_header(settings):
    settings.CORS_ALLOWED_ORIGINS = [APP]
    for origin in ["https://evil.example", "http://app.example.com", "https://app.example.com:8443", "null"]:
        assert "access-control-allow-origin" not in preflight(origin).headers, origin
        assert "access-control-allow-origin" not in Client().get("/api/v1/", HTTP_ORIGIN=origin).headers


@pytest.mark.django_db
def test_pages_outside_the_api_never_get_cors_headers(settings):
    settings.CORS_ALLOWED_ORIGINS = [APP]
    assert "access-control-allow-origin" not in Client().get("/", HTTP_ORIGIN=APP).headers
    assert "access-control-allow-origin" not in preflight(APP, "/accounts/login/").headers
