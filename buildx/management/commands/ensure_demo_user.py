"""Create the demo account on first start and print its password once."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

DEMO_EMAIL = "demo@buildx.local"


class Command(BaseCommand):
    help = "Create the demo user if it does not exist yet, printing its password once."

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        if User.objects.filter(email=DEMO_EMAIL).exists():
            self.stdout.write(f"Demo user: {DEMO_EMAIL} (password printed when it was created)")
            return
        password = secrets.token_urlsafe(9)
        user = User.objects.create_user(email=DEMO_EMAIL, password=password, first_name="Demo")
        try:
            from allauth.account.models import EmailAddress

            EmailAddress.objects.create(user=user, email=DEMO_EMAIL, primary=True, verified=True)
        except Exception:  # allauth's table is always there after migrate; keep the demo usable regardless
            pass
        self.stdout.write(
            self.style.SUCCESS(f"Demo user created: {DEMO_EMAIL} / {password}  (shown only once)")
        )
