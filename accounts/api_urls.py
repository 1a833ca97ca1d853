from __future__ import annotations

from django.urls import path

from accounts import api

urlpatterns = [
    path("me/", api.MeView.as_view(), name="api-me"),
]
