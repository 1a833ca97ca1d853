"""Sign-up, email verification, login, logout and password reset through the real allauth pages."""

from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from django.core import mail

from accounts.models import User
from buildx.test import PASSWORD

NEW_PASSWORD = "a-brand-new-passphrase-42"


def link_in_last_mail(path_prefix: str) -> str:
    match = re.search(rf"http://testserver({re.escape(path_prefix)}\S+)", str(mail.outbox[-1].body))
    assert match, mail.outbox[-1].body
    return match.group(1)


@pytest.mark.django_db
def test_a_visitor_signs_up_verifies_their_email_and_lands_on_the_dashboard(client):
    response = client.post(
        "/accounts/signup/",
        {"email": "erin@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    user = User.objects.get(email="erin@example.com")
    assert user.username == "erin@example.com"
    assert user.check_password(PASSWORD)
    assert client.get("/dashboard/").status_code == 200

    # The verification mail links to a page that confirms the address.
    assert mail.outbox[-1].to == ["erin@example.com"]
    assert mail.outbox[-1].subject == "[BuildX] Please Confirm Your Email Address"
    assert "example.com!" not in mail.outbox[-1].body
    confirm_path = link_in_last_mail("/accounts/confirm-email/")
    page = client.get(confirm_path)
    assert page.status_code == 200
    assert "erin@example.com" in page.content.decode()
    assert client.post(confirm_path).status_code == 302
    assert EmailAddress.objects.get(email="erin@example.com").verified


@pytest.mark.django_db
def test_sign_up_refuses_an_email_that_already_has_an_account(client, alice):
    response = client.post(
        "/accounts/signup/",
        {"email": "alice@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 200
    assert "already registered" in response.content.decode()
    assert User.objects.filter(email="alice@example.com").count() == 1


@pytest.mark.django_db
def test_alice_logs_in_sees_her_email_in_the_navigation_and_logs_out(client, alice):
    response = client.post("/accounts/login/", {"login": "alice@example.com", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    page = client.get("/dashboard/")
    assert "alice@example.com" in page.content.decode()

    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/dashboard/")["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
def test_a_wrong_password_is_refused_with_a_message(client, alice):
    response = client.post("/accounts/login/", {"login": "alice@example.com", "password": "nope-nope-nope"})
    assert response.status_code == 200
    assert "not correct" in response.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_a_forgotten_password_is_reset_through_the_emailed_link(client, alice):
    response = client.post("/accounts/password/reset/", {"email": "alice@example.com"})
    assert response.status_code == 302
    reset_path = link_in_last_mail("/accounts/password/reset/key/")

    # allauth moves the key into the session and redirects to a key-less form.
    response = client.get(reset_path, follow=True)
    form_path = response.redirect_chain[-1][0] if response.redirect_chain else reset_path
    response = client.post(form_path, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302

    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    response = client.post("/accounts/login/", {"login": "alice@example.com", "password": NEW_PASSWORD})
    assert response["Location"] == "/dashboard/"


@pytest.mark.django_db
def test_the_admin_has_no_login_form_of_its_own(client):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")
    # A password posted to the admin is not checked there either: it goes to the site login.
    response = client.post("/admin/login/", {"username": "alice@example.com", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
def test_admin_logins_are_rate_limited_like_the_site_login(client, carol):
    carol.is_staff = carol.is_superuser = True
    carol.save()
    login_url = client.get("/admin/")["Location"]
    login_url = client.get(login_url)["Location"] if login_url.startswith("/admin/login/") else login_url
    assert login_url.startswith("/accounts/login/")

    for _ in range(5):
        response = client.post(login_url, {"login": "carol@example.com", "password": "guess-guess-guess"})
        assert response.status_code == 200
    # The right password no longer helps: the email is locked for a while.
    response = client.post(login_url, {"login": "carol@example.com", "password": PASSWORD})
    assert response.status_code == 200
    assert "Too many failed login attempts" in response.content.decode()
    assert client.get("/admin/").status_code == 302


@pytest.mark.django_db
def test_a_staff_member_reaches_the_admin_through_the_site_login(client, carol):
    carol.is_staff = carol.is_superuser = True
    carol.save()
    response = client.post(
        "/accounts/login/?next=/admin/", {"login": "carol@example.com", "password": PASSWORD}
    )
    assert response["Location"] == "/admin/"
    page = client.get("/admin/accounts/user/")
    assert page.status_code == 200
    assert "carol@example.com" in page.content.decode()
