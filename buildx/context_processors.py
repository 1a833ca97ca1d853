from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def platform(request: HttpRequest) -> dict:
    return {
        "GOOGLE_LOGIN_ENABLED": settings.GOOGLE_LOGIN_ENABLED,
        "LLM_ENABLED": settings.LLM_ENABLED,
        "PHONE_SIGNUP_ENABLED": settings.PHONE_SIGNUP_ENABLED,
    }
