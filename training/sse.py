"""``GET /api/v1/runs/<id>/stream/``: a run's events as Server-Sent Events, for clients that cannot speak
WebSocket (``EventSource``, curl, a proxy that only passes HTTP). docs/contracts.md section 8.

Each stored event goes out once, in order, as ``id: <seq>`` / ``event: <type>`` / ``data: <the event's
JSON, as the WebSocket sends it>``. A client resumes after the last event it saw with ``Last-Event-ID``
(``EventSource`` sends it by itself when it reconnects) or, the first time, ``?after=<seq>``. When the
run is finished and everything stored has gone out, an ``end`` event closes the stream; asked again, the
stream answers 204, which tells ``EventSource`` not to reconnect.

Who: the run's owner, their instructor, a superuser (``runs_viewable_by``, as the run API); logged in by
the session or an access token in ``Authorization: Bearer`` (never the URL). Another user's run is a 404.
A stream counts as one of its user's open connections (``WS_MAX_PER_USER``, with their sockets).

Why it polls the stored events instead of listening on the channel layer: every event is stored before
it is published, so the database is the complete, ordered record, and resuming from a sequence number is
one indexed query (``run_id, seq > n``) with no gap or duplicate to sort out; the channel layer drops
messages over its capacity, and the consumer needs a replay, a backlog and gap filling to be exact. The
cost is one small query per ``SSE_POLL_SECONDS`` per open stream and up to that much latency, which
suits the few clients that cannot use the WebSocket (pages use ``/ws/``). The view is async and the
stream an async generator on the server's event loop: a waiting stream holds no thread, and no database
connection (each poll borrows one and gives it back). A stream ends after ``SSE_MAX_SECONDS`` (or when
its access token expires), so that who may watch is checked again on reconnection; a comment line goes
out every ``SSE_KEEPALIVE_SECONDS`` of silence so that proxies keep an idle stream open.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from django.conf import settings
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from buildx import tokens
from buildx.api import error_body
from buildx.db import hand_back_connections, read_async
from training import limits
from training.models import Run, RunEvent
from training.selectors import runs_viewable_by

PAGE = 500  # events read per query
RETRY_MS = 2000  # how long EventSource waits before it reconnects


def _error(code: str, message: str, status: int, **headers: str) -> JsonResponse:
    return JsonResponse(error_body(code=code, message=message), status=status, headers=headers)


def _with_ended(runs: QuerySet[Run]) -> QuerySet[Run]:
    """``runs`` annotated with ``last_kind``, the type of each one's newest stored event."""
    newest = RunEvent.objects.filter(run=OuterRef("pk")).order_by("-seq").values("kind")[:1]
    return runs.annotate(last_kind=Subquery(newest))


def _ended(status: str | None, last_kind: str | None) -> bool:
    """Nothing more is coming (unless the run is resumed): it is finished and its ``run.done`` is stored
    (a stop may commit the status a moment before the event). A run that is gone has ended too."""
    return status is None or (status in Run.FINISHED and last_kind == "run.done")


@read_async
def _visible_run(user, run_id: int) -> tuple[bool, int] | None:
    """``(ended, last_seq)`` of a run ``user`` may view, or None."""
    # (last_kind is _with_ended's annotation, which the stubs' plugin cannot see.)
    found = _with_ended(runs_viewable_by(user).filter(pk=run_id)).values_list(
        "status",
        "last_kind",
        "last_seq",  # type: ignore[misc]
    )
    row = found.first()
    return None if row is None else (_ended(row[0], row[1]), row[2])


@read_async
def _read(run_id: int, after: int) -> tuple[list[dict], bool]:
    """Stored events after ``after`` (a page), and whether the run had ended before they were read."""
    row = _with_ended(Run.objects.filter(pk=run_id)).values_list("status", "last_kind").first()  # type: ignore[misc]
    events = RunEvent.objects.filter(run_id=run_id, seq__gt=after).order_by("seq")[:PAGE]
    return [e.as_message() for e in events], _ended(*(row or (None, None)))


def _frame(event: dict) -> str:
    # json.dumps escapes newlines inside strings: the data is one line.
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"


async def _events(*, run_id: int, after: int, deadline: float, slot: limits.SocketSlot) -> AsyncIterator[str]:
    try:
        yield f"retry: {RETRY_MS}\n\n"
        quiet_since = time.monotonic()
        while True:
            events, ended = await _read(run_id, after)
            for event in events:
                yield _frame(event)
                after = event["seq"]
            if events:
                quiet_since = time.monotonic()
            if len(events) == PAGE:
                continue  # more are stored: no wait
            if ended:
                yield f"event: end\ndata: {json.dumps({'run': run_id, 'last_seq': after})}\n\n"
                return
            if time.monotonic() >= deadline:
                return  # EventSource reconnects with Last-Event-ID, and is checked again
            if time.monotonic() - quiet_since >= settings.SSE_KEEPALIVE_SECONDS:
                yield ": keepalive\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(settings.SSE_POLL_SECONDS)
    finally:
        await slot.release()


def _resume_point(request: HttpRequest) -> int | None:
    """``Last-Event-ID`` (a reconnection), else ``?after=``, else 0; None when either one that is given
    is not a sequence number."""
    given = [request.headers.get("Last-Event-ID"), *request.GET.getlist("after")]
    points = []
    for value in given:
        if value is None:
            continue
        if not (value.strip().isascii() and value.strip().isdigit()):
            return None
        points.append(int(value))
    return points[0] if points else 0


@csrf_exempt  # it only reads; a POST gets the API's 405 below, not the CSRF failure page
async def run_stream(request: HttpRequest, pk: int) -> HttpResponseBase:
    if request.method != "GET":
        message = _('Method "%(method)s" not allowed.') % {"method": request.method}
        return _error("method_not_allowed", message, 405, Allow="GET")
    token = tokens.bearer_token(request.headers)
    expires_at = None
    if token is not None:  # as the API: a token, when sent, decides (even with a session cookie)
        found = await tokens.access_token_user_async(token)
        if isinstance(found, tokens.TokenRefused):
            return _error("authentication_failed", found.reason, 401, **{"WWW-Authenticate": "Bearer"})
        user, expires_at = found.user, found.expires_at
    else:
        user = await request.auser()
        if not user.is_authenticated:
            message = _("Authentication credentials were not provided.")
            return _error("not_authenticated", message, 401, **{"WWW-Authenticate": "Bearer"})
    after = _resume_point(request)
    if after is None:
        return _error("invalid", _("Last-Event-ID and after are sequence numbers."), 400)
    run = await _visible_run(user, pk)
    if run is None:  # another user's run and a run that does not exist get the same answer
        return _error("not_found", _("Not found."), 404)
    ended, last_seq = run
    if ended and after >= last_seq:
        return HttpResponse(status=204)  # nothing more will come: EventSource stops reconnecting
    slot = await limits.socket_slot_take(user_id=user.pk)
    if isinstance(slot, limits.SocketRefused):
        return _error("too_many_connections", slot.reason, 429, **{"Retry-After": "30"})
    deadline = time.monotonic() + settings.SSE_MAX_SECONDS
    if expires_at is not None:
        deadline = min(deadline, time.monotonic() + max(0.0, expires_at - time.time()))
    # The stream may go on for minutes: its polls borrow connections of their own (_read), so the one
    # that checking the user took goes back to the pool now, not when the stream ends.
    await hand_back_connections()
    response = StreamingHttpResponse(
        _events(run_id=pk, after=after, deadline=deadline, slot=slot), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx passes each event on at once
    return response


def openapi_paths(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: this view is plain Django (DRF has no async views), so the
    schema learns of it here."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    sequence = {"type": "integer", "minimum": 0}
    # One message of the stream: a run event (id: its seq, event: its type, data: its JSON) or the end.
    event = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "event": {"type": "string", "enum": [*RunEvent.Kind.values, "end"]},
            "data": {"type": "string", "description": "The event as JSON, as the WebSocket sends it."},
            "retry": {"type": "integer"},
        },
    }
    result["paths"]["/api/v1/runs/{id}/stream/"] = {
        "get": {
            "operationId": "runs_stream_retrieve",
            "summary": "The run's events as Server-Sent Events (docs/contracts.md section 8)",
            "description": (
                "Each stored event as `id: <seq>`, `event: <type>`, `data: <event JSON>`, then `event: end` "
                "once the run is finished. Resume with `Last-Event-ID` (or `?after=` the first time). "
                "204 when the run is finished and nothing is left after that point."
            ),
            "tags": ["runs"],
            "parameters": [
                {"in": "path", "name": "id", "required": True, "schema": {"type": "integer"}},
                {"in": "header", "name": "Last-Event-ID", "schema": sequence},
                {"in": "query", "name": "after", "schema": sequence},
            ],
            "security": [{"tokenAuth": []}, {"cookieAuth": []}],
            "responses": {
                "200": {
                    "description": "The event stream.",
                    "content": {"text/event-stream": {"schema": event}},
                },
                "204": {"description": "The run is finished and nothing is left to send."},
                "400": {"description": "Last-Event-ID or after is not a sequence number.", "content": error},
                "401": {"description": "No session or access token, or a bad one.", "content": error},
                "404": {"description": "No such run, or not one the caller may view.", "content": error},
                "405": {"description": "Only GET is answered.", "content": error},
                "429": {"description": "Over the user's open connections.", "content": error},
            },
        }
    }
    return result
