"""Phone numbers through the real allauth pages: sign up, add and verify, log in with a code.

Texts go to the in-memory SMS backend (``sms_outbox``); everything else runs for real: allauth's
flows, the session that holds a pending code, the rate limits in the cache.
"""

from __future__ import annotations

import re
import time

import pytest
from allauth.account.models import EmailAddress
from django.test import Client

from accounts.models import User
from buildx.test import make_user

ALICE_PHONE = "+821011112222"
HANA_PHONE = "+821055556666"


def code_in(outbox, number: str) -> str:
    texts = [m.text for m in outbox if m.to == number]
    assert texts, f"no text to {number}: {outbox}"
    found = re.search(r"\b(\d{6})\b", texts[-1])
    assert found, texts[-1]
    return found.group(1)


def phone_user(email: str | None, number: str, **extra) -> User:
    """A user whose number is verified (as after a code), with or without an email."""
    if email:
        user = make_user(email, **extra)
    else:
        user = User.objects.create_user(email=None, username=f"user-{number[-4:]}", password=None, **extra)
    user.phone_number = number
    user.phone_verified = True
    user.save()
    return user


def log_in_by_code(client, typed: str, outbox, number: str):
    response = client.post("/accounts/login/code/", {"phone": typed})
    assert response.status_code == 302, response.content.decode()[:3000]
    assert response["Location"] == "/accounts/login/code/confirm/"
    return client.post("/accounts/login/code/confirm/", {"code": code_in(outbox, number)})


@pytest.fixture
def alice_phone(alice):
    alice.phone_number = ALICE_PHONE
    alice.phone_verified = True
    alice.save()
    return alice


@pytest.mark.django_db
def test_a_visitor_signs_up_with_a_phone_number_and_a_code(client, sms_outbox):
    page = client.get("/accounts/signup/?by=phone").content.decode()
    assert 'name="phone"' in page and 'name="password1"' not in page

    response = client.post("/accounts/signup/?by=phone", {"phone": "010-5555-6666", "first_name": "Hana"})
    assert response.status_code == 302, response.content.decode()[:3000]
    assert response["Location"] == "/accounts/phone/verify/"
    user = User.objects.get(phone_number=HANA_PHONE)
    assert not user.phone_verified
    assert client.get("/dashboard/").status_code == 302  # not logged in before the code

    code = code_in(sms_outbox, HANA_PHONE)
    assert len(code) == 6 and code.isdigit()
    response = client.post("/accounts/phone/verify/", {"code": code})
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    assert client.get("/dashboard/").status_code == 200

    user.refresh_from_db()
    assert user.phone_verified
    assert user.email is None
    assert user.first_name == "Hana"
    assert not user.has_usable_password()
    assert user.username.startswith("user-") and "5555" not in user.username
    assert client.get("/api/v1/me/").json()["phone"] == {"number": HANA_PHONE, "verified": True}


@pytest.mark.django_db
def test_two_phone_sign_ups_without_email_coexist(client, sms_outbox):
    phone_user(None, "+821077778888")
    response = client.post("/accounts/signup/?by=phone", {"phone": "010-5555-6666"})
    assert response.status_code == 302
    assert User.objects.filter(email__isnull=True).count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "Enter your phone number, for example 010-1234-5678."),
        ("hello", "This is not a phone number: type its digits, for example 010-1234-5678."),
        ("010-123", "This number is too short for a number with country code +82."),
        ("010-1234-56789", "This number is too long for a number with country code +82."),
        ("02-123-4567", "+82 2-123-4567 cannot receive text messages: enter a mobile number."),
        ("+999 123 4567", "Unknown country code."),
    ],
)
def test_a_phone_sign_up_says_what_is_wrong_with_the_number(client, sms_outbox, typed, message):
    response = client.post("/accounts/signup/?by=phone", {"phone": typed})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not User.objects.exists()
    assert sms_outbox == []


@pytest.mark.django_db
def test_the_email_sign_up_still_asks_for_a_password(client, sms_outbox):
    response = client.post(
        "/accounts/signup/", {"email": "erin@example.com", "password1": "", "password2": ""}
    )
    assert response.status_code == 200
    assert "Choose a password for your account." in response.content.decode()
    assert not User.objects.exists()


@pytest.mark.django_db
def test_signing_up_with_a_number_that_has_an_account_reveals_nothing(client, sms_outbox, alice_phone):
    response = client.post("/accounts/signup/?by=phone", {"phone": "010-1111-2222"})
    # The same answer as a new number: "enter the code we sent", and no second account.
    assert response.status_code == 302
    assert response["Location"] == "/accounts/phone/verify/"
    assert User.objects.filter(phone_number=ALICE_PHONE).count() == 1
    # The owner is told by text, without a code; no code typed here can log anyone in.
    assert [m.to for m in sms_outbox] == [ALICE_PHONE]
    assert not re.search(r"\d{6}", sms_outbox[0].text)
    response = client.post("/accounts/phone/verify/", {"code": "123456"})
    assert client.get("/dashboard/").status_code == 302


@pytest.mark.django_db
def test_alice_adds_and_verifies_a_phone_on_her_email_account(alice_client, alice, sms_outbox):
    page = alice_client.get("/accounts/phone/change/")
    assert page.status_code == 200
    response = alice_client.post("/accounts/phone/change/", {"phone": "010 1111 2222"})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/phone/verify/"
    alice.refresh_from_db()
    assert alice.phone_number == ""  # not hers before she proves it

    response = alice_client.post("/accounts/phone/verify/", {"code": code_in(sms_outbox, ALICE_PHONE)})
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.phone_number == ALICE_PHONE and alice.phone_verified
    page = alice_client.get("/accounts/phone/change/").content.decode()
    assert "010-1111-2222" in page and "Verified" in page

    # Then she logs in with it, elsewhere.
    other = alice_client.__class__()
    response = log_in_by_code(other, "01011112222", sms_outbox, ALICE_PHONE)
    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    assert other.get("/api/v1/me/").json()["email"] == "alice@example.com"


@pytest.mark.django_db
def test_a_number_verified_on_alice_cannot_be_added_to_bob(client, bob, alice_phone, sms_outbox):
    client.force_login(bob)
    response = client.post("/accounts/phone/change/", {"phone": "010-1111-2222"})
    # Bob is not told whose it is; a code goes to alice's phone, which he does not have...
    assert response.status_code == 302
    assert code_in(sms_outbox, ALICE_PHONE)
    # ...and even the right code does not move the number.
    response = client.post("/accounts/phone/verify/", {"code": code_in(sms_outbox, ALICE_PHONE)})
    assert response.status_code == 200
    assert "already registered with this phone number" in response.content.decode()
    bob.refresh_from_db()
    alice_phone.refresh_from_db()
    assert bob.phone_number == "" and not bob.phone_verified
    assert alice_phone.phone_number == ALICE_PHONE and alice_phone.phone_verified


@pytest.mark.django_db
def test_alice_logs_in_with_her_phone_and_a_code(client, alice_phone, sms_outbox):
    login_page = client.get("/accounts/login/").content.decode()
    assert 'href="/accounts/login/code/"' in login_page

    response = log_in_by_code(client, "010-1111-2222", sms_outbox, ALICE_PHONE)
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    assert client.get("/api/v1/me/").json()["email"] == "alice@example.com"
    assert "BuildX code" in sms_outbox[-1].text


@pytest.mark.django_db
def test_a_wrong_code_is_refused_and_the_third_ends_the_attempt(client, alice_phone, sms_outbox):
    client.post("/accounts/login/code/", {"phone": "010-1111-2222"})
    good = code_in(sms_outbox, ALICE_PHONE)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    for _ in range(2):
        response = client.post("/accounts/login/code/confirm/", {"code": wrong})
        assert response.status_code == 200
        assert "Incorrect code." in response.content.decode()
    response = client.post("/accounts/login/code/confirm/", {"code": wrong})
    assert response.status_code == 302  # three strikes: back to the start
    # The right code no longer works: the attempt is over.
    response = client.post("/accounts/login/code/confirm/", {"code": good})
    assert response.status_code == 302
    assert client.get("/dashboard/").status_code == 302


@pytest.mark.django_db
def test_an_expired_code_is_refused(client, alice_phone, sms_outbox, monkeypatch, settings):
    client.post("/accounts/login/code/", {"phone": "010-1111-2222"})
    code = code_in(sms_outbox, ALICE_PHONE)
    later = time.time() + settings.ACCOUNT_LOGIN_BY_CODE_TIMEOUT + 1
    monkeypatch.setattr(time, "time", lambda: later)
    response = client.post("/accounts/login/code/confirm/", {"code": code})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/code/"
    monkeypatch.undo()
    assert client.get("/dashboard/").status_code == 302


@pytest.mark.django_db
def test_a_used_code_cannot_log_in_again(client, alice_phone, sms_outbox):
    response = log_in_by_code(client, "010-1111-2222", sms_outbox, ALICE_PHONE)
    assert response["Location"] == "/dashboard/"
    code = code_in(sms_outbox, ALICE_PHONE)
    client.post("/accounts/logout/")
    response = client.post("/accounts/login/code/confirm/", {"code": code})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/code/"
    assert client.get("/dashboard/").status_code == 302


@pytest.mark.django_db
def test_an_unknown_number_gets_the_same_answer_and_no_text(client, sms_outbox):
    response = client.post("/accounts/login/code/", {"phone": "010-9999-0000"})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/code/confirm/"
    page = client.get("/accounts/login/code/confirm/").content.decode()
    assert "010-9999-0000" in page or "+821099990000" in page
    assert sms_outbox == []


def ask_for_code(typed: str):
    """A code request from a new browser: one session holds one pending login, and an attacker has many."""
    return Client().post("/accounts/login/code/", {"phone": typed})


@pytest.mark.django_db
def test_the_sixth_code_in_an_hour_is_refused_without_sending(alice_phone, sms_outbox):
    # However it is typed, it is one number.
    for typed in ["010-1111-2222", "01011112222", "+82 10 1111 2222", "010 1111 2222", "+821011112222"]:
        assert ask_for_code(typed).status_code == 302
    assert len(sms_outbox) == 5
    response = ask_for_code("010-1111-2222")
    assert response.status_code == 200
    assert "Too many failed login attempts" in response.content.decode()
    assert len(sms_outbox) == 5


@pytest.mark.django_db
def test_an_unknown_number_is_limited_the_same_way(sms_outbox):
    for _ in range(5):
        assert ask_for_code("010-9999-0000").status_code == 302
    response = ask_for_code("010-9999-0000")
    assert response.status_code == 200
    assert "Too many failed login attempts" in response.content.decode()


@pytest.mark.django_db
def test_one_address_cannot_ask_for_codes_to_many_numbers(sms_outbox, settings):
    settings.ACCOUNT_RATE_LIMITS = {**settings.ACCOUNT_RATE_LIMITS, "request_login_code": "3/10m/ip,5/h/key"}
    for n in range(3):
        assert ask_for_code(f"010-9999-000{n}").status_code == 302
    response = ask_for_code("010-9999-0009")
    assert response.status_code == 200
    assert "Too many failed login attempts" in response.content.decode()


@pytest.mark.django_db
def test_texts_to_one_number_are_capped_across_flows(alice_phone, bob, sms_outbox, settings):
    # Whatever a flow's own limit says, a number gets at most five texts an hour: here four login codes
    # under a looser login limit, then bob asks to verify the number from his account page (a fifth
    # text, to alice), then one more login code: refused, nothing sent.
    settings.ACCOUNT_RATE_LIMITS = {
        **settings.ACCOUNT_RATE_LIMITS,
        "request_login_code": "30/10m/ip,50/h/key",
    }
    for _ in range(4):
        assert ask_for_code("010-1111-2222").status_code == 302
    client = Client()
    client.force_login(bob)
    assert client.post("/accounts/phone/change/", {"phone": "010-1111-2222"}).status_code == 302
    assert len(sms_outbox) == 5
    response = ask_for_code("010-1111-2222")
    assert response.status_code == 429
    assert len(sms_outbox) == 5


@pytest.mark.django_db
def test_a_phone_number_is_not_a_password_login(client, alice_phone):
    response = client.post(
        "/accounts/login/", {"login": "010-1111-2222", "password": "correct-horse-battery-staple"}
    )
    assert response.status_code == 200
    assert client.get("/dashboard/").status_code == 302


@pytest.mark.django_db
def test_a_login_by_phone_does_not_verify_an_unverified_email(client, sms_outbox):
    user = phone_user("hana@example.com", HANA_PHONE, verified=False)
    log_in_by_code(client, "010-5555-6666", sms_outbox, HANA_PHONE)
    assert client.get("/dashboard/").status_code == 200
    assert not EmailAddress.objects.get(user=user).verified


@pytest.mark.django_db
def test_an_old_unverified_number_does_not_block_the_login(client, alice):
    alice.phone_number = "+821012340000"
    alice.save()
    response = client.post(
        "/accounts/login/", {"login": "alice@example.com", "password": "correct-horse-battery-staple"}
    )
    assert response["Location"] == "/dashboard/"


@pytest.mark.django_db
def test_the_phone_pages_and_their_errors_speak_korean(client, sms_outbox):
    korean = {"HTTP_ACCEPT_LANGUAGE": "ko"}
    assert "전화번호로 로그인" in client.get("/accounts/login/", **korean).content.decode()
    assert "전화번호로 회원가입" in client.get("/accounts/signup/?by=phone", **korean).content.decode()
    response = client.post("/accounts/login/code/", {"phone": "010-123"}, **korean)
    assert "국가 번호 +82의 번호로는 너무 짧습니다." in response.content.decode()
    phone_user(None, HANA_PHONE)
    client.post("/accounts/login/code/", {"phone": "010-5555-6666"}, **korean)
    assert "BuildX 인증 코드" in sms_outbox[-1].text
