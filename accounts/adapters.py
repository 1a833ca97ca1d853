from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings
from django.http import HttpResponse


class AccountAdapter(DefaultAccountAdapter):
    def populate_username(self, request, user) -> None:
        # Users log in by email; the username mirrors it so the admin and __str__ stay readable.
        if not user.username:
            user.username = (user.email or "")[:150]

    def post_login(self, request, user, **kwargs) -> HttpResponse:
        response = super().post_login(request, user, **kwargs)
        # The language the user chose last time, in any browser, comes back with the login.
        language = getattr(user, "preferred_language", "")
        if language and language in dict(settings.LANGUAGES):
            response.set_cookie(
                settings.LANGUAGE_COOKIE_NAME,
                language,
                max_age=settings.LANGUAGE_COOKIE_AGE,
                path=settings.LANGUAGE_COOKIE_PATH,
                domain=settings.LANGUAGE_COOKIE_DOMAIN,
                secure=settings.LANGUAGE_COOKIE_SECURE,
                httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
                samesite=settings.LANGUAGE_COOKIE_SAMESITE,
            )
        return response


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def populate_user(self, request, sociallogin, data):
        user = super().populate_user(request, sociallogin, data)
        if not user.username:
            user.username = (user.email or "")[:150]
        return user
