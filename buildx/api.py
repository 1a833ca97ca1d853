"""One error shape for the whole API.

Every error answer is ``{"error": {"code": ..., "message": ..., "fields": {field: [messages]}}}``
so a client (and the editor page) handles them the same way everywhere.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from django.utils.translation import gettext as _
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def error_body(*, code: str, message: str, fields: dict | None = None) -> dict[str, Any]:
    """The error shape itself, for answers given outside DRF (middleware)."""
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if fields:
        body["error"]["fields"] = fields
    return body


def error_response(
    *, code: str, message: str, fields: dict | None = None, http_status: int = 400
) -> Response:
    return Response(error_body(code=code, message=message, fields=fields), status=http_status)


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            for k, v in _flatten(value, name).items():
                out.setdefault(k, []).extend(v)
    elif isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            out[prefix or "non_field_errors"] = [str(item) for item in detail]
        else:
            for index, item in enumerate(detail):
                for k, v in _flatten(item, f"{prefix}[{index}]").items():
                    out.setdefault(k, []).extend(v)
    else:
        out[prefix or "non_field_errors"] = [str(detail)]
    return out


def exception_handler(exc: Exception, context: dict) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ValidationError):
        fields = _flatten(response.data)
        message = _("Some fields are not valid.")
        response.data = {"error": {"code": "invalid", "message": message, "fields": fields}}
        response.status_code = status.HTTP_400_BAD_REQUEST
        return response
    detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
    if isinstance(exc, Http404):
        # get_object_or_404 in a view: DRF answers it, but Django's exception carries no code.
        code = "not_found"
    elif isinstance(exc, DjangoPermissionDenied):
        code = "permission_denied"
    else:
        code = str(
            getattr(getattr(exc, "detail", None), "code", None) or getattr(exc, "default_code", "error")
        )
    response.data = {"error": {"code": str(code), "message": str(detail)}}
    return response
