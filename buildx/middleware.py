"""Request bodies checked before any parser sees them.

Python's json module recurses once per level of nesting: a 200 kB body of ``[[[[...]]]]`` raises
RecursionError inside DRF's parser or allauth's headless views, which is a 500 (and a traceback in the
logs) on every endpoint that reads JSON. ``JSONBodyLimits`` answers such a body with a 400 in the API's
error shape before any view runs, from a scan of the raw bytes that builds nothing.
"""

from __future__ import annotations

import array
import itertools
import re

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from django.utils.translation import gettext as _

from buildx.api import error_body

_OPENS_AND_CLOSES = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 and, read as signed bytes, -1
_NOT_A_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
_JSON_START = re.compile(rb"\s*[\[{]")
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text, without parsing it.

    Escaped backslashes, then escaped quotes, are dropped; every quote left opens or closes a string,
    so every other piece between quotes is outside the strings (a "[" in a string is text). Of those,
    only brackets are kept, as +1 / -1, and the deepest level is the largest running sum. O(n), and
    each step runs in C, whatever the shape of the body.
    """
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(unescaped.split(b'"')[::2])
    brackets = outside_strings.translate(_OPENS_AND_CLOSES, _NOT_A_BRACKET)
    return max(itertools.accumulate(array.array("b", brackets)), default=0)


def _looks_like_json(request: HttpRequest) -> bool | None:
    """True for a JSON content type, None for a body that must be read to tell, False for forms."""
    content_type = request.content_type or ""
    if "json" in content_type:
        return True
    return False if content_type in _FORMS else None


class JSONBodyLimits(MiddlewareMixin):
    """A JSON body larger than Django reads into memory, or nested deeper than MAX_JSON_DEPTH, is refused.

    Some readers parse JSON whatever the content type says (allauth's headless views do), so any body
    that is not a form and starts with ``[`` or ``{`` is checked. Multipart bodies (uploads) are never
    read here: Django streams them to files.
    """

    def process_request(self, request: HttpRequest) -> JsonResponse | None:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        kind = _looks_like_json(request) if length > 0 else False
        if kind is False:
            return None
        cap = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if cap is not None and length > cap:
            if kind is None:
                return None  # not known to be JSON: Django's own limit answers when something reads it
            message = _(
                "This request is larger than %(max)s kB, the most BuildX reads as JSON. Send images as "
                "files (multipart form data), or send less at a time."
            ) % {"max": cap // 1024}
            return JsonResponse(error_body(code="too_large", message=message), status=413)
        body = request.body  # read once here; parsers later read the same bytes from memory
        if kind is None and not _JSON_START.match(body):
            return None
        limit = settings.MAX_JSON_DEPTH
        # Counting brackets first spares the scan to nearly every body: fewer brackets, no deeper.
        if body.count(b"[") + body.count(b"{") > limit and json_depth(body) > limit:
            message = _(
                "This JSON is nested more than %(max)d levels deep. Send data with fewer levels of "
                "brackets: a design's spec needs only a few."
            ) % {"max": limit}
            return JsonResponse(error_body(code="too_deep", message=message), status=400)
        return None
