"""Helpers shared by the test suites."""

from __future__ import annotations

from django.contrib.auth import get_user_model

PASSWORD = "correct-horse-battery-staple"


def make_user(email: str, *, password: str = PASSWORD, verified: bool = True, **extra):
    from allauth.account.models import EmailAddress

    user = get_user_model().objects.create_user(email=email, password=password, **extra)
    EmailAddress.objects.create(user=user, email=email, primary=True, verified=verified)
    return user
