"""Phone login, sign-up and verification for API clients (allauth headless, "app" client): the same JWT
pair as an email login, and the same rules as the pages."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.models import User
from accounts.tests.test_api_tokens import AUTH, bearer, headless_login

ALICE_PHONE = "+821011112222"


def post(client, path: str, body: dict | None = None, *, session: str | None = None, **extra):
    if session:
        extra["HTTP_X_SESSION_TOKEN"] = session
    return client.post(f"{AUTH}{path}", body or {}, content_type="application/json", **extra)


def last_code(outbox, number: str) -> str:
    texts = [m.text for m in outbox if m.to == number]
    assert texts, outbox
    found = re.search(r"\b(\d{6})\b", texts[-1])
    assert found, texts[-1]
    return found.group(1)


@pytest.fixture
def alice_phone(alice):
    alice.phone_number = ALICE_PHONE
    alice.phone_verified = True
    alice.save()
    return alice


def request_code(client, phone: str):
    response = post(client, "/auth/code/request", {"phone": phone})
    assert response.status_code == 401, response.content  # "not logged in yet: a flow is pending"
    body = response.json()
    assert {"id": "login_by_code", "is_pending": True} in [
        {k: f.get(k) for k in ("id", "is_pending")} for f in body["data"]["flows"]
    ]
    return body["meta"]["session_token"]


@pytest.mark.django_db
def test_an_api_client_logs_in_with_a_phone_and_a_code_and_gets_the_jwt_pair(client, alice_phone, sms_outbox):
    session = request_code(client, "010-1111-2222")
    response = post(
        client, "/auth/code/confirm", {"code": last_code(sms_outbox, ALICE_PHONE)}, session=session
    )
    assert response.status_code == 200, response.content
    meta = response.json()["meta"]
    assert meta["is_authenticated"] is True
    assert meta["refresh_token"]

    me = Client().get("/api/v1/me/", **bearer(meta["access_token"]))
    assert me.status_code == 200
    assert me.json()["email"] == "alice@example.com"
    assert me.json()["phone"] == {"number": ALICE_PHONE, "verified": True}


@pytest.mark.django_db
def test_the_api_refuses_a_wrong_code_then_ends_the_attempt(client, alice_phone, sms_outbox):
    session = request_code(client, ALICE_PHONE)
    good = last_code(sms_outbox, ALICE_PHONE)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    for _ in range(3):
        response = post(client, "/auth/code/confirm", {"code": wrong}, session=session)
        assert response.status_code == 400
        assert response.json()["errors"][0]["code"] == "incorrect_code"
    response = post(client, "/auth/code/confirm", {"code": good}, session=session)
    assert response.status_code == 409  # no pending login any more


@pytest.mark.django_db
def test_a_used_code_cannot_be_confirmed_twice(client, alice_phone, sms_outbox):
    session = request_code(client, ALICE_PHONE)
    code = last_code(sms_outbox, ALICE_PHONE)
    assert post(client, "/auth/code/confirm", {"code": code}, session=session).status_code == 200
    replay = post(Client(), "/auth/code/confirm", {"code": code}, session=session)
    assert replay.status_code in (401, 409, 410)  # 410: that login session is over
    assert "access_token" not in replay.json().get("meta", {})


@pytest.mark.django_db
def test_an_unknown_number_gets_the_same_answer_through_the_api(client, sms_outbox):
    session = request_code(client, "010-9999-0000")
    assert session
    assert sms_outbox == []


@pytest.mark.django_db
def test_the_api_refuses_the_sixth_code_in_an_hour(alice_phone, sms_outbox):
    for _ in range(5):
        request_code(Client(), ALICE_PHONE)
    response = post(Client(), "/auth/code/request", {"phone": ALICE_PHONE})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "too_many_login_attempts"
    assert len(sms_outbox) == 5


@pytest.mark.django_db
def test_the_api_says_what_is_wrong_with_a_number(client, sms_outbox):
    response = post(client, "/auth/code/request", {"phone": "010-123"})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["param"] == "phone"
    assert error["code"] == "invalid_phone"
    assert error["message"] == "This number is too short for a number with country code +82."


@pytest.mark.django_db
def test_a_phone_and_a_password_do_not_log_in(client, alice_phone):
    response = post(client, "/auth/login", {"phone": ALICE_PHONE, "password": "correct-horse-battery-staple"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "phone_password_login"


@pytest.mark.django_db
def test_an_api_client_signs_up_with_a_phone_number(client, sms_outbox):
    response = post(client, "/auth/signup", {"phone": "010-5555-6666"})
    assert response.status_code == 401, response.content
    body = response.json()
    assert "verify_phone" in [f["id"] for f in body["data"]["flows"] if f.get("is_pending")]
    session = body["meta"]["session_token"]
    response = post(
        client, "/auth/phone/verify", {"code": last_code(sms_outbox, "+821055556666")}, session=session
    )
    assert response.status_code == 200, response.content
    access = response.json()["meta"]["access_token"]
    me = Client().get("/api/v1/me/", **bearer(access)).json()
    assert me["email"] is None
    assert me["phone"] == {"number": "+821055556666", "verified": True}


@pytest.mark.django_db
def test_an_api_sign_up_needs_an_email_or_a_phone(client):
    response = post(client, "/auth/signup", {"password": "a-long-passphrase-77"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == "Enter an email address or a phone number."
    assert not User.objects.exists()


@pytest.mark.django_db
def test_an_api_client_adds_and_verifies_a_phone(client, alice, sms_outbox):
    meta = headless_login(client, "alice@example.com").json()["meta"]
    auth = bearer(meta["access_token"])
    api = Client()
    response = api.post(
        f"{AUTH}/account/phone", {"phone": "010-1111-2222"}, content_type="application/json", **auth
    )
    assert response.status_code == 202, response.content
    assert response.json()["data"] == [{"phone": ALICE_PHONE, "verified": False}]
    response = api.post(
        f"{AUTH}/auth/phone/verify",
        {"code": last_code(sms_outbox, ALICE_PHONE)},
        content_type="application/json",
        **auth,
    )
    assert response.status_code == 200, response.content
    response = api.get(f"{AUTH}/account/phone", **auth)
    assert response.json()["data"] == [{"phone": ALICE_PHONE, "verified": True}]


@pytest.mark.django_db
def test_the_api_will_not_move_alices_number_to_bob(client, alice_phone, bob, sms_outbox):
    meta = headless_login(client, "bob@example.com").json()["meta"]
    auth = bearer(meta["access_token"])
    api = Client()
    response = api.post(
        f"{AUTH}/account/phone", {"phone": ALICE_PHONE}, content_type="application/json", **auth
    )
    assert response.status_code == 202
    response = api.post(
        f"{AUTH}/auth/phone/verify",
        {"code": last_code(sms_outbox, ALICE_PHONE)},
        content_type="application/json",
        **auth,
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "phone_taken"
    bob.refresh_from_db()
    assert bob.phone_number == ""


@pytest.mark.django_db
def test_a_resent_code_counts_against_the_numbers_texts(client, alice_phone, sms_outbox):
    session = request_code(client, ALICE_PHONE)
    assert post(client, "/auth/code/resend", session=session).status_code == 200
    assert len(sms_outbox) == 2
    first, second = (m.text for m in sms_outbox)
    assert first != second  # a new code
    response = post(
        client, "/auth/code/confirm", {"code": last_code(sms_outbox, ALICE_PHONE)}, session=session
    )
    assert response.status_code == 200


@pytest.mark.django_db
def test_the_api_refuses_an_expired_code(client, alice_phone, sms_outbox, monkeypatch, settings):
    import time

    session = request_code(client, ALICE_PHONE)
    code = last_code(sms_outbox, ALICE_PHONE)
    later = time.time() + settings.ACCOUNT_LOGIN_BY_CODE_TIMEOUT + 1
    monkeypatch.setattr(time, "time", lambda: later)
    response = post(client, "/auth/code/confirm", {"code": code}, session=session)
    assert response.status_code == 409
    assert "access_token" not in response.json().get("meta", {})
