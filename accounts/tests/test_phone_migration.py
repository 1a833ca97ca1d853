"""Migration 0005 rewrites the numbers admins typed before phones were verified."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.db import connection

from accounts.models import User
from buildx.test import make_user

migration = importlib.import_module("accounts.migrations.0005_phone_numbers")


def set_raw(user: User, phone: str) -> None:
    # As a CharField held it: the model field would parse it on the way in.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE accounts_user SET phone_number = %s WHERE id = %s", [phone, user.pk])


@pytest.mark.django_db
def test_typed_numbers_become_e164_unverified_and_bad_ones_are_kept(capsys):
    typed = {
        "alice@example.com": ("010-1234-5678", "+821012345678"),
        "bob@example.com": ("+82 10 9876 5432", "+821098765432"),
        "carol@example.com": ("", ""),
        "dave@example.com": ("call me", "call me"),
    }
    users = {email: make_user(email) for email in typed}
    for email, (raw, _expected) in typed.items():
        set_raw(users[email], raw)

    migration.to_e164(apps, None)

    for email, (_raw, expected) in typed.items():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT phone_number, phone_verified FROM accounts_user WHERE id = %s", [users[email].pk]
            )
            stored, verified = cursor.fetchone()
        assert (stored, bool(verified)) == (expected, False), email
    assert f"users [{users['dave@example.com'].pk}]" in capsys.readouterr().out
