"""API clients log in through allauth headless and call the API with short-lived JWTs."""

from __future__ import annotations

import time

import jwt
import pytest
from allauth.headless.tokens.strategies.jwt import internal as jwt_internal
from django.test import Client

from buildx.test import PASSWORD

AUTH = "/api/auth/app/v1"


def headless_login(client, email: str, password: str = PASSWORD):
    return client.post(
        f"{AUTH}/auth/login", {"email": email, "password": password}, content_type="application/json"
    )


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.mark.django_db
def test_a_jwt_login_gives_tokens_that_open_the_api(client, alice):
    response = headless_login(client, "alice@example.com")
    assert response.status_code == 200, response.content
    meta = response.json()["meta"]
    assert meta["is_authenticated"] is True
    access = meta["access_token"]
    assert meta["refresh_token"]

    me = client.get("/api/v1/me/", **bearer(access))
    assert me.status_code == 200
    assert me.json()["email"] == "alice@example.com"
    assert me.json()["language"] == "en"


@pytest.mark.django_db
def test_tokens_are_issued_for_thirty_minutes_and_seven_days(client, alice):
    meta = headless_login(client, "alice@example.com").json()["meta"]
    access = jwt_internal.decode_token(meta["access_token"], "access")
    refresh = jwt_internal.decode_token(meta["refresh_token"], "refresh")
    assert access["exp"] - access["iat"] == 30 * 60
    assert refresh["exp"] - refresh["iat"] == 7 * 24 * 3600


@pytest.mark.django_db
def test_a_refresh_rotates_the_refresh_token(client, alice):
    meta = headless_login(client, "alice@example.com").json()["meta"]
    response = client.post(
        f"{AUTH}/tokens/refresh", {"refresh_token": meta["refresh_token"]}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert data["refresh_token"] != meta["refresh_token"]
    assert client.get("/api/v1/me/", **bearer(data["access_token"])).status_code == 200

    # The old refresh token was used up: a replay is refused.
    replay = client.post(
        f"{AUTH}/tokens/refresh", {"refresh_token": meta["refresh_token"]}, content_type="application/json"
    )
    assert replay.status_code == 400


@pytest.mark.django_db
def test_an_expired_access_token_gets_401(client, alice, monkeypatch):
    # Issue the token 31 minutes in the past, so it expired a minute ago.
    issued_at = time.time() - 31 * 60

    class ThirtyOneMinutesAgo:
        @staticmethod
        def time() -> float:
            return issued_at

    monkeypatch.setattr(jwt_internal, "time", ThirtyOneMinutesAgo)
    access = headless_login(client, "alice@example.com").json()["meta"]["access_token"]
    monkeypatch.undo()

    response = client.get("/api/v1/me/", **bearer(access))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"error": {"code": "authentication_failed", "message": "Invalid token."}}


@pytest.mark.django_db
def test_the_api_answers_401_without_credentials_and_accepts_the_browser_session(alice_client):
    response = Client().get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert alice_client.get("/api/v1/me/").json()["email"] == "alice@example.com"


@pytest.mark.django_db
def test_logging_out_revokes_the_access_token(client, alice):
    access = headless_login(client, "alice@example.com").json()["meta"]["access_token"]
    assert client.get("/api/v1/me/", **bearer(access)).status_code == 200
    response = client.delete(f"{AUTH}/auth/session", **bearer(access))
    assert response.status_code == 401  # allauth's answer to a finished logout: "not authenticated"
    assert client.get("/api/v1/me/", **bearer(access)).status_code == 401


@pytest.mark.django_db
def test_a_wrong_password_gets_no_token(client, alice):
    response = headless_login(client, "alice@example.com", "not-her-password")
    assert response.status_code == 400
    assert "access_token" not in response.content.decode()


@pytest.mark.django_db
def test_with_jwt_private_key_set_tokens_are_signed_with_rs256(client, alice, settings):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    settings.HEADLESS_JWT_PRIVATE_KEY = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    settings.HEADLESS_JWT_ALGORITHM = "RS256"

    access = headless_login(client, "alice@example.com").json()["meta"]["access_token"]
    assert jwt.get_unverified_header(access)["alg"] == "RS256"
    jwt.decode(access, key.public_key(), algorithms=["RS256"], options={"verify_aud": False})
    assert client.get("/api/v1/me/", **bearer(access)).status_code == 200


@pytest.mark.django_db
def test_a_jwt_request_costs_two_queries(client, alice, django_assert_num_queries):
    # The session behind the token (stateful validation: a logout revokes it) and the user.
    access = headless_login(client, "alice@example.com").json()["meta"]["access_token"]
    with django_assert_num_queries(2):
        assert Client().get("/api/v1/me/", **bearer(access)).status_code == 200
