from __future__ import annotations

from django.utils.translation import get_language
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import signed_in_user


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()
    name = serializers.CharField()
    language = serializers.CharField(help_text="The account's preferred language, else the request's.")
    is_staff = serializers.BooleanField()


class MeView(APIView):
    """Who the caller is: a quick way for an API client to check its token."""

    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        user = signed_in_user(request)
        data = {
            "id": user.id,
            "email": user.email,
            "name": user.display_name,
            "language": user.preferred_language or get_language(),
            "is_staff": user.is_staff,
        }
        return Response(MeSerializer(data).data)
