"""Structured logs: one JSON object a line in production, readable lines in development, and the ids
that let an operator follow one run from its POST through the worker to its feedback.

Every line carries what is known where it is written, from context variables (structlog's):
``request_id`` (nginx's ``X-Request-ID``, or one made here), ``user_id``, ``run_id``, and on a worker
``message_id`` and ``actor``. A request's ids travel with the messages it enqueues (Dramatiq message
options, ``LogContext``), so a worker's lines and the lines of the jobs it enqueues in turn carry them
too.

Standard-library loggers (``logging.getLogger(__name__)`` everywhere in BuildX, Django's, Dramatiq's)
go through the same formatter: nothing has to change its logger to be structured.

No secrets in logs: values under keys that name a secret are replaced, and Authorization headers,
cookies and query strings are never logged (the request line has the path only).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from dramatiq.middleware import Middleware

logger = logging.getLogger("buildx.request")

REQUEST_ID_HEADER = "X-Request-ID"
# A request id from nginx is 32 hex digits; anything a client may send is kept only when it is short
# and plain, so a forged header cannot put text of its choice (or a newline) into the log.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
CONTEXT_KEYS = ("request_id", "user_id", "run_id")
MESSAGE_OPTION = "buildx_log_context"
SECRET_KEY_PATTERN = re.compile(
    r"pass(word)?|secret|token|api[_-]?key|authorization|cookie|session|credential|dsn", re.I
)
REDACTED = "[redacted]"


def redact_secrets(_logger: Any, _method: str, event: dict) -> dict:
    """Replace the value of any field whose name says it is a secret (``password=...``, ``token=...``)."""
    for key in list(event):
        if key != "event" and SECRET_KEY_PATTERN.search(key):
            event[key] = REDACTED
    return event


def shared_processors() -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.ExtraAdder(),  # a standard-library record's extra= fields
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]


def formatter(*, json: bool) -> logging.Formatter:
    """The formatter of settings.LOGGING: every standard-library record (BuildX's, Django's,
    Dramatiq's) through structlog's processors, as one JSON object a line or as a readable line with
    the same fields. structlog's own loggers are pointed at it too."""
    configure_structlog()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    final = [structlog.processors.dict_tracebacks] if json else []
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final, renderer],
    )


def configure_structlog() -> None:
    """structlog's own loggers (``structlog.get_logger()``) hand their events to the standard library."""
    structlog.configure(
        processors=[*shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def bind(**values: Any) -> None:
    """Add ids to every line this request, message or thread writes from here on (and, with Sentry on,
    to the tags of any error it reports)."""
    values = {k: v for k, v in values.items() if v is not None}
    structlog.contextvars.bind_contextvars(**values)
    if settings.SENTRY_DSN:
        import sentry_sdk

        for key, value in values.items():
            sentry_sdk.set_tag(key, value)
        if "user_id" in values:
            sentry_sdk.set_user({"id": values["user_id"]})


def current_context() -> dict[str, Any]:
    """The ids bound now (for a message enqueued from here)."""
    bound = structlog.contextvars.get_contextvars()
    return {k: bound[k] for k in CONTEXT_KEYS if k in bound}


def request_id_of(request: HttpRequest) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if REQUEST_ID_PATTERN.fullmatch(given) else uuid.uuid4().hex


class RequestContext:
    """Binds the request id and the user id for everything logged while a request is served, answers
    with the request id in ``X-Request-ID``, and writes one line per request (method, path without its
    query, status, duration). Sync and async: an async view keeps its event loop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        started = self.before(request)
        return self.after(request, self.get_response(request), started)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        started = self.before(request)
        return self.after(request, await self.get_response(request), started)

    def before(self, request: HttpRequest) -> float:
        structlog.contextvars.clear_contextvars()
        request.request_id = request_id_of(request)  # type: ignore[attr-defined]
        bind(request_id=request.request_id)  # type: ignore[attr-defined]
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            bind(user_id=user.pk)
        return time.perf_counter()

    def after(self, request: HttpRequest, response: HttpResponse, started: float) -> HttpResponse:
        # A token (JWT) request is authenticated by DRF inside the view, after before().
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            bind(user_id=user.pk)
        response[REQUEST_ID_HEADER] = request.request_id  # type: ignore[attr-defined]
        logger.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return response

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> None:
        # A run's pages and endpoints name it by pk: their lines carry its run id.
        match = request.resolver_match
        name = match.url_name if match is not None else None
        if name and "pk" in view_kwargs and (name.startswith("api-run") or name.startswith("run-")):
            bind(run_id=view_kwargs["pk"])


class LogContext(Middleware):
    """Carries the ids bound where a message is enqueued to the worker that processes it, and binds the
    message's own id and actor there for everything its job logs."""

    def before_enqueue(self, broker, message, delay) -> None:
        context = current_context()
        if context and MESSAGE_OPTION not in message.options:
            message.options[MESSAGE_OPTION] = context

    def before_process_message(self, broker, message) -> None:
        structlog.contextvars.clear_contextvars()
        context = message.options.get(MESSAGE_OPTION)
        if isinstance(context, dict):
            bind(**{k: v for k, v in context.items() if k in CONTEXT_KEYS})
        bind(message_id=message.message_id, actor=message.actor_name, queue=message.queue_name)

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        structlog.contextvars.clear_contextvars()

    after_skip_message = after_process_message
