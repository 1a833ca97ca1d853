from __future__ import annotations

import pytest
from django.core.management import call_command

from accounts.models import User


@pytest.mark.django_db
def test_createsuperuser_asks_for_an_email_and_fills_the_username(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-admin-passphrase-1")
    call_command("createsuperuser", "--noinput", "--email", "Root@Example.com", verbosity=0)
    user = User.objects.get(email="Root@example.com")
    assert user.is_superuser and user.is_staff
    assert user.username == "Root@example.com"
    assert user.check_password("a-long-admin-passphrase-1")


@pytest.mark.django_db
def test_the_demo_user_is_created_once_and_can_log_in(client, capsys):
    call_command("ensure_demo_user")
    first = capsys.readouterr().out
    password = first.split(" / ")[1].split()[0]
    call_command("ensure_demo_user")
    second = capsys.readouterr().out
    assert password not in second
    assert User.objects.filter(email="demo@buildx.local").count() == 1
    response = client.post("/accounts/login/", {"login": "demo@buildx.local", "password": password})
    assert response["Location"] == "/dashboard/"


@pytest.mark.django_db
def test_the_admin_lists_users_with_their_buildx_fields(client, carol, alice):
    carol.is_staff = carol.is_superuser = True
    carol.save()
    client.force_login(carol)
    page = client.get(f"/admin/accounts/user/{alice.pk}/change/").content.decode()
    assert "alice@example.com" in page
    assert 'name="phone_number"' in page
    assert 'name="preferred_language"' in page


@pytest.mark.django_db
def test_an_admin_adds_a_user_by_email(client, carol, alice):
    carol.is_staff = carol.is_superuser = True
    carol.save()
    client.force_login(carol)
    form = {
        "email": "hana@example.com",
        "usable_password": "true",
        "password1": "a-long-passphrase-77",
        "password2": "a-long-passphrase-77",
    }
    response = client.post("/admin/accounts/user/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    hana = User.objects.get(email="hana@example.com")
    assert hana.username == "hana@example.com"
    assert hana.check_password("a-long-passphrase-77")

    response = client.post("/admin/accounts/user/add/", {**form, "email": "ALICE@example.com"})
    assert response.status_code == 200
    assert "A user with this email address already exists." in response.content.decode()
    assert User.objects.filter(email__iexact="alice@example.com").count() == 1
