"""Google and a phone number on one account: linked only from inside the account, each one proven.

A phone is proven by a code sent to it, Google by its OAuth round trip (only Google's HTTP endpoints
are faked, as in test_google_login). Nothing links through an unverified email or phone.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from allauth.socialaccount.models import SocialAccount
from django.test import Client, override_settings

from accounts.models import User
from accounts.tests.test_google_login import GOOGLE_APP, GOOGLE_SUB, google_round_trip
from accounts.tests.test_google_login import fake_google as fake_google  # noqa: F401 - the fixture
from buildx.test import PASSWORD, make_user

HANA_PHONE = "+821055556666"


def last_code(outbox, number: str) -> str:
    texts = [m.text for m in outbox if m.to == number]
    assert texts, outbox
    found = re.search(r"\b(\d{6})\b", texts[-1])
    assert found, texts[-1]
    return found.group(1)


def phone_sign_up(client, outbox) -> User:
    client.post("/accounts/signup/?by=phone", {"phone": "010-5555-6666", "first_name": "Hana"})
    response = client.post("/accounts/phone/verify/", {"code": last_code(outbox, HANA_PHONE)})
    assert response["Location"] == "/dashboard/"
    return User.objects.get(phone_number=HANA_PHONE)


def connect_google(client):
    response = client.post("/accounts/google/login/?process=connect")
    assert response.status_code == 302
    params = parse_qs(urlsplit(response["Location"]).query)
    return client.get(
        "/accounts/google/login/callback/", {"code": "4/fake-code", "state": params["state"][0]}
    )


def log_in_by_code(client, number: str, outbox):
    client.post("/accounts/login/code/", {"phone": number})
    return client.post("/accounts/login/code/confirm/", {"code": last_code(outbox, number)})


@pytest.mark.django_db
@override_settings(SOCIALACCOUNT_PROVIDERS=GOOGLE_APP)
def test_a_phone_user_connects_google_from_the_account_page(client, sms_outbox, fake_google):
    hana = phone_sign_up(client, sms_outbox)  # the phone is proven by its code
    fake_google(email="hana@example.com", with_id_token=False)
    page = client.get("/accounts/3rdparty/").content.decode()
    assert "process=connect" in page

    callback = connect_google(client)  # Google is proven by its round trip
    assert callback.status_code == 302
    assert SocialAccount.objects.get(provider="google", uid=GOOGLE_SUB).user == hana
    assert User.objects.count() == 1

    # Either way in now reaches the same account.
    other = Client()
    callback, _ = google_round_trip(other)
    assert other.get("/api/v1/me/").json()["id"] == hana.pk
    third = Client()
    assert log_in_by_code(third, HANA_PHONE, sms_outbox)["Location"] == "/dashboard/"
    assert third.get("/api/v1/me/").json()["id"] == hana.pk


@pytest.mark.django_db
@override_settings(SOCIALACCOUNT_PROVIDERS=GOOGLE_APP)
def test_connecting_google_needs_googles_answer(client, sms_outbox, fake_google):
    phone_sign_up(client, sms_outbox)
    google = fake_google(email="hana@example.com", with_id_token=False)
    client.post("/accounts/google/login/?process=connect")
    response = client.get("/accounts/google/login/callback/", {"code": "4/fake-code", "state": "forged"})
    assert response.status_code == 401
    assert google.requests == []
    assert not SocialAccount.objects.exists()


@pytest.mark.django_db
@override_settings(SOCIALACCOUNT_PROVIDERS=GOOGLE_APP)
def test_a_google_login_without_the_link_never_reaches_the_phone_account(client, sms_outbox, fake_google):
    hana = phone_sign_up(client, sms_outbox)
    fake_google(email="hana@example.com", with_id_token=False)
    other = Client()
    google_round_trip(other)
    me = other.get("/api/v1/me/").json()
    assert me["id"] != hana.pk  # a new account: nothing ties Google to this phone
    assert not SocialAccount.objects.filter(user=hana).exists()


@pytest.mark.django_db
@override_settings(SOCIALACCOUNT_PROVIDERS=GOOGLE_APP)
def test_a_google_user_adds_a_phone_that_links_only_once_its_code_is_typed(client, sms_outbox, fake_google):
    fake_google(email="frank@example.com", with_id_token=False)
    google_round_trip(client)
    frank = User.objects.get(email="frank@example.com")

    client.post("/accounts/phone/change/", {"phone": "010-5555-6666"})
    # Not his yet: the number logs nobody in, and no code is sent for it.
    stranger = Client()
    log_in = stranger.post("/accounts/login/code/", {"phone": "010-5555-6666"})
    assert log_in.status_code == 302
    assert len([m for m in sms_outbox if m.to == HANA_PHONE]) == 1  # the verification code only

    client.post("/accounts/phone/verify/", {"code": last_code(sms_outbox, HANA_PHONE)})
    frank.refresh_from_db()
    assert frank.phone_verified
    other = Client()
    assert log_in_by_code(other, HANA_PHONE, sms_outbox)["Location"] == "/dashboard/"
    assert other.get("/api/v1/me/").json()["id"] == frank.pk


@pytest.mark.django_db
@override_settings(SOCIALACCOUNT_PROVIDERS=GOOGLE_APP)
def test_google_is_not_linked_through_an_email_nobody_verified(client, fake_google):
    # Someone typed alice's address into a sign-up and never verified it.
    squatter = make_user("alice@example.com", verified=False)
    fake_google(email="alice@example.com", with_id_token=False)
    callback, _ = google_round_trip(client)
    assert not SocialAccount.objects.filter(user=squatter).exists()
    assert client.session.get("_auth_user_id") != str(squatter.pk)
    squatter.refresh_from_db()
    assert squatter.check_password(PASSWORD)  # untouched: it was not "taken over" and wiped either


@pytest.mark.django_db
@override_settings(SOCIALACCOUNT_PROVIDERS=GOOGLE_APP)
def test_a_google_account_linked_to_bob_is_not_moved_to_hana(client, bob, sms_outbox, fake_google):
    SocialAccount.objects.create(user=bob, provider="google", uid=GOOGLE_SUB)
    hana = phone_sign_up(client, sms_outbox)
    fake_google(email="bob@example.com", with_id_token=False)
    response = connect_google(client)
    assert response.status_code == 302
    assert SocialAccount.objects.get(uid=GOOGLE_SUB).user == bob
    assert not SocialAccount.objects.filter(user=hana).exists()
