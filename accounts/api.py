from __future__ import annotations

from django.utils.translation import get_language
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import signed_in_user


class PhoneSerializer(serializers.Serializer):
    number = serializers.CharField(help_text="E.164, for example +821012345678.")
    verified = serializers.BooleanField(help_text="Only a verified number logs in (by code).")


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField(allow_null=True, help_text="Null for an account made with a phone number.")
    phone = PhoneSerializer(allow_null=True, help_text="The account's phone number, or null.")
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
            "phone": (
                {"number": str(user.phone_number), "verified": user.phone_verified}
                if user.phone_number
                else None
            ),
            "name": user.display_name,
            "language": user.preferred_language or get_language(),
            "is_staff": user.is_staff,
        }
        return Response(MeSerializer(data).data)
