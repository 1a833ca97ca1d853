"""One error shape for the whole API, and its root.

Every error answer is ``{"error": {"code": ..., "message": ..., "fields": {field: [messages]}}}``
so a client (and the editor page) handles them the same way everywhere.

``GET /api/v1/`` lists every endpoint of the API by name (``ApiRoot``); a path under it that names
none is a 404 in that shape too (``not_found``), not Django's HTML page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, URLPattern, URLResolver, resolve, reverse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
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


_CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")


def named_routes(patterns: Sequence[URLPattern | URLResolver], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(url name, path template)`` of every named route in ``patterns``, includes followed, in order;
    ``runs/<int:pk>/`` is written ``runs/{pk}/``."""
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from named_routes(entry.url_patterns, prefix + str(entry.pattern))
        elif entry.name:
            yield entry.name, _CONVERTER.sub(r"{\1}", prefix + str(entry.pattern))


class ApiRoot(APIView):
    """The API's front page: every endpoint by name, as URLs (``{pk}``: fill in an id), and the login
    endpoints for API clients (allauth headless, described by its own OpenAPI document)."""

    permission_classes = [AllowAny]
    routes: Sequence[URLPattern | URLResolver] = ()

    @extend_schema(
        summary="Every endpoint of the API, by name",
        responses={200: {"type": "object", "additionalProperties": {"type": "string"}}},
    )
    def get(self, request: Request) -> Response:
        base = request.build_absolute_uri(
            request.path
        )  # where this root is mounted: the routes are relative to it
        links = {"auth": request.build_absolute_uri("/api/auth/app/v1/")}
        links["auth_docs"] = request.build_absolute_uri(reverse("headless:openapi_html"))
        for name, template in named_routes(self.routes):
            if name != "api-root":
                links[name.removeprefix("api-").replace("-", "_")] = base + template
        return Response(links)


@csrf_exempt  # it changes nothing: a POST gets the same JSON 404, not the CSRF failure page
def not_found(request: HttpRequest, path: str = "") -> HttpResponsePermanentRedirect | JsonResponse:
    """The last route under /api/v1/: a path that names no endpoint. Django's own 404 is an HTML page
    (its debug page with DEBUG on), which an API client cannot read. A path missing only its final slash
    is sent on to it with 308, which keeps the method and the body (Django's APPEND_SLASH cannot:
    this route matches every path, and it answers a POST with an error)."""
    if not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not not_found:
            query = request.META.get("QUERY_STRING", "")
            response = HttpResponsePermanentRedirect(request.path + "/" + (f"?{query}" if query else ""))
            response.status_code = 308
            return response
    return JsonResponse(error_body(code="not_found", message=_("Not found.")), status=404)
