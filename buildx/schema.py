"""The OpenAPI schema's view of the API (drf-spectacular): the one error shape, on every answer that can
carry it.

drf-spectacular documents what a view says it returns; the errors that the API's machinery gives every
view (a missing or bad token, a body that cannot be read, a path that names nothing) would be missing,
and a client generated from the schema would not expect them. ``AutoSchema`` adds them in the shape
``buildx.api.exception_handler`` gives them; a view's own ``extend_schema(responses=...)`` adds the
codes only it answers (409, 429, 503...).
"""

from __future__ import annotations

import re

from drf_spectacular import openapi
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

# {"error": {"code", "message", "fields"?}}: buildx.api.error_body.
ERROR = inline_serializer(
    "Error",
    fields={
        "error": inline_serializer(
            "ErrorBody",
            fields={
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "fields": serializers.DictField(
                    child=serializers.ListField(child=serializers.CharField()), required=False
                ),
            },
        )
    },
)


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's, plus the errors every view of its kind can answer:

    - 401 everywhere: a token that is missing (where a login is needed), forged, expired or revoked;
    - 400 where a body or query parameters are read (``invalid``, ``too_deep``), and 413 for a JSON body
      over the size limit (``buildx.middleware.JSONBodyLimits``);
    - 403 for a POST, PATCH or DELETE with the session but no CSRF token;
    - 404 where the path names something (another user's is a 404 too), or a list is paged (a page that
      does not exist).
    """

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        codes = ["401"]
        unsafe = self.method in ("POST", "PUT", "PATCH", "DELETE")
        if unsafe or self.get_override_parameters() or self._paginated():
            codes.append("400")
        if unsafe:
            codes += ["403", "413"]
        if re.search(r"[<{]", self.path) or self._paginated():
            codes.append("404")
        for code in codes:
            if code not in responses:
                responses[code] = self._get_response_for_code(ERROR, code, direction=direction)
        return responses

    def _paginated(self) -> bool:
        return self.method == "GET" and self._get_paginator() is not None and self._is_list_view()
