"""The admin: an instructor sees whether a student's phone is verified, never the number; a superuser
sees and edits the number."""

from __future__ import annotations

import pytest

from accounts.models import User

ALICE_PHONE = "+821011112222"
SHOWN = ["+821011112222", "010-1111-2222", "01011112222", "1111-2222", "11112222"]


@pytest.fixture
def alice_phone(alice):
    alice.phone_number = ALICE_PHONE
    alice.phone_verified = True
    alice.save()
    return alice


def assert_no_number(body: str) -> None:
    for form in SHOWN:
        assert form not in body, form


@pytest.mark.django_db
def test_carol_sees_that_alices_phone_is_verified_but_not_the_number(carol_client, alice_phone, bob):
    bob.phone_number = "+821033334444"
    bob.save()
    page = carol_client.get(f"/admin/accounts/user/{alice_phone.pk}/change/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "alice@example.com" in body  # positive control
    assert "verified" in body
    assert 'name="phone_number"' not in body
    assert_no_number(body)

    listing = carol_client.get("/admin/accounts/user/").content.decode()
    assert "alice@example.com" in listing and "verified" in listing
    assert_no_number(listing)


@pytest.mark.django_db
def test_carol_cannot_find_a_student_by_their_number(carol_client, alice_phone):
    assert "alice@example.com" in carol_client.get("/admin/accounts/user/?q=alice").content.decode()
    found = carol_client.get(f"/admin/accounts/user/?q={ALICE_PHONE}").content.decode()
    assert "alice@example.com" not in found
    filtered = carol_client.get("/admin/accounts/user/?phone_verified__exact=1").content.decode()
    assert "alice@example.com" in filtered


@pytest.mark.django_db
def test_a_superuser_sees_searches_and_edits_the_number(client, carol, alice_phone):
    carol.is_staff = carol.is_superuser = True
    carol.save()
    client.force_login(carol)
    listing = client.get(f"/admin/accounts/user/?q={ALICE_PHONE}").content.decode()
    assert "alice@example.com" in listing and ALICE_PHONE in listing
    page = client.get(f"/admin/accounts/user/{alice_phone.pk}/change/").content.decode()
    assert 'name="phone_number"' in page and ALICE_PHONE in page


@pytest.mark.django_db
def test_the_admin_cannot_give_a_verified_number_to_a_second_user(client, carol, alice_phone, bob):
    carol.is_staff = carol.is_superuser = True
    carol.save()
    client.force_login(carol)
    page = client.get(f"/admin/accounts/user/{bob.pk}/change/")
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and not isinstance(v, (list, tuple))}
    data.update(
        {
            "email": "bob@example.com",
            "username": bob.username,
            "phone_number": "010-1111-2222",
            "phone_verified": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        }
    )
    data.pop("last_login", None)
    data.pop("password", None)
    data.pop("groups", None)
    data.pop("user_permissions", None)
    response = client.post(f"/admin/accounts/user/{bob.pk}/change/", data)
    assert response.status_code == 200, response.status_code
    errors = response.context["adminform"].form.errors.as_data()
    assert [e.code for e in errors["__all__"]] == ["phone_taken"], errors
    assert "This phone number is already verified on another account." in response.content.decode()
    bob.refresh_from_db()
    assert bob.phone_number == "" and not bob.phone_verified
    assert User.objects.filter(phone_number=ALICE_PHONE, phone_verified=True).count() == 1


@pytest.mark.django_db
def test_a_phone_only_student_shows_by_name_never_by_number(carol_client, course_a):
    from accounts import services

    hana = User.objects.create_user(email=None, username="user-1a2b3c4d", first_name="Hana")
    hana.phone_number = "+821055556666"
    hana.phone_verified = True
    hana.save()
    services.course_join(user=hana, code=course_a.join_code)
    for url in [
        f"/courses/{course_a.pk}/",
        f"/admin/accounts/course/{course_a.pk}/overview/",
        "/admin/accounts/user/",
    ]:
        body = carol_client.get(url).content.decode()
        assert "Hana" in body, url
        assert "None" not in body, url
        for shown in ["+821055556666", "010-5555-6666", "5555-6666"]:
            assert shown not in body, url
