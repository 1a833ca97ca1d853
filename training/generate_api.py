"""POST /api/v1/runs/{id}/generate/: text from a finished language-model run, whole or as an event stream.

Body `{"prompt", "max_new_tokens", "temperature", "top_k", "seed", "stream"}`. Without `stream` the answer
is one JSON object once the text is written; with `"stream": true` (or `Accept: text/event-stream`) it is
Server-Sent Events as the tokens come: `generate.token` (`index`, `id`, `text`: what the token adds) and
`generate.done` (`prompt`, `text`, `tokens`, `seconds`). Errors are buildx/api.py's one shape: 404 for
another user's run, 409 for a run that cannot generate (not finished, an image model, code BuildX cannot
rebuild), 400 for a bad body, 429 over the predictions' limits or when every generation thread is busy.
"""

from __future__ import annotations

import json
import math
import queue
from collections.abc import Iterator
from typing import Any

from django.http import StreamingHttpResponse
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import signed_in_user
from buildx.api import error_response
from buildx.schema import ERROR
from training import generate, limits, predict
from training.predict_api import own_run, refused, too_many


def parse_request(body: Any, *, vocab_size: int) -> tuple[generate.Request | None, dict[str, list[str]]]:
    """The generation a body asks for, or the fields that are wrong (sentences for a beginner)."""
    if not isinstance(body, dict):
        return None, {"body": [_("Send a JSON object with a prompt.")]}
    fields: dict[str, list[str]] = {}
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str) or len(prompt) > generate.MAX_PROMPT_CHARS:
        fields["prompt"] = [
            _("prompt must be text of at most %(n)s characters.") % {"n": generate.MAX_PROMPT_CHARS}
        ]

    def number(name: str, default: Any, low: float, high: float, *, whole: bool) -> Any:
        value = body.get(name, default)
        if value is None and name in ("top_k", "seed"):
            return None
        ok = isinstance(value, int) if whole else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or not math.isfinite(value) or not low <= value <= high:
            fields[name] = [
                _("%(name)s must be a number from %(low)s to %(high)s.")
                % {"name": name, "low": low, "high": high}
            ]
            return default
        return value

    max_new = number("max_new_tokens", 200, 1, generate.MAX_NEW_TOKENS, whole=True)
    temperature = number("temperature", 0.8, 0, 2, whole=False)
    top_k = number("top_k", min(40, vocab_size), 0, vocab_size, whole=True)
    seed = number("seed", None, 0, 2**31 - 1, whole=True)
    if fields:
        return None, fields
    return generate.Request(
        prompt=prompt,
        max_new_tokens=int(max_new),
        temperature=float(temperature),
        top_k=int(top_k) or None if top_k is not None else None,
        seed=seed,
    ), {}


def _sse(run_id: int, out: queue.Queue, cancelled: Any) -> Iterator[bytes]:
    try:
        yield b"retry: 2000\n\n"
        for kind, data in generate.events(out):
            event = f"generate.{kind}"
            payload = json.dumps({"type": event, "run": run_id, **data}, ensure_ascii=False)
            yield f"event: {event}\ndata: {payload}\n\n".encode()
    finally:
        cancelled.set()  # the client went away: stop generating


class RunGenerate(APIView):
    parser_classes = [JSONParser]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # `Accept: text/event-stream` (the generate page's fetch) asks for the stream, which this view
        # answers itself: DRF's renderers know only JSON and answered 406 before the view ran. A refusal
        # before the stream starts is JSON whatever was asked for.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        summary="Write text with a finished language-model run",
        request={"application/json": OpenApiTypes.OBJECT},
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="the text, or an event stream"),
            400: ERROR,
            409: ERROR,
            429: ERROR,
        },
    )
    def post(self, request: Request, pk: int) -> Response | StreamingHttpResponse:
        with limits.prediction_admitted(user_id=signed_in_user(request).pk) as busy:
            if busy is not None:
                return too_many(busy)
            return self._generate(request, pk)

    def _generate(self, request: Request, pk: int) -> Response | StreamingHttpResponse:
        run = own_run(request, pk)
        try:
            generate.check_generatable(run)
            loaded = generate.get_model(run)
        except predict.PredictRefused as exc:
            return refused(exc)
        wanted, fields = parse_request(request.data, vocab_size=loaded.vocab_size)
        if wanted is None:
            return error_response(
                code="invalid",
                message=_("The generation request has mistakes."),
                fields=fields,
                http_status=400,
            )
        try:
            out, cancelled = generate.start(loaded, wanted)
        except generate.Busy:
            response = error_response(
                code="too_many_requests",
                message=_("BuildX is writing other texts right now: try again in a moment."),
                http_status=429,
            )
            response["Retry-After"] = "2"
            return response
        asked = request.data.get("stream") if isinstance(request.data, dict) else None
        if bool(asked) or "text/event-stream" in request.headers.get("Accept", ""):
            stream = StreamingHttpResponse(_sse(run.pk, out, cancelled), content_type="text/event-stream")
            stream["Cache-Control"] = "no-cache"
            stream["X-Accel-Buffering"] = "no"
            return stream
        tokens: list[dict] = []
        for kind, data in generate.events(out):
            if kind == "token":
                tokens.append(data)
            elif kind == "error":
                return error_response(code="generation_failed", message=data["message"], http_status=409)
            else:
                return Response(
                    {
                        "run": run.pk,
                        "checkpoint": {"name": loaded.checkpoint, "epoch": loaded.epoch},
                        **data,
                        "token_ids": [t["id"] for t in tokens],
                    }
                )
        return error_response(
            code="generation_failed", message=_("The generation ended early."), http_status=409
        )
