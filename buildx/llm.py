"""The one place that talks to an OpenAI-compatible API (OpenAI, or a local vLLM / Ollama server).

    answer = llm.chat(user=user, purpose="feedback", messages=[{"role": "user", "content": "..."}])
    answer.text, answer.tokens_in, answer.tokens_out, answer.cached, answer.latency_ms

Every call is recorded as a buildx.LLMCall row (tokens, cost, latency, attempts, error). The same
(model, messages, params) is answered from the cache instead of paid twice: Django's cache first,
then the LLMCall table (so a cache flush does not cost money); the same question asked twice at once
waits for the first answer. A user who has spent
LLM_USER_HOURLY_BUDGET tokens in the last hour is refused until the window frees up; cache hits are
free and always served.

Failures are LLMError subclasses whose str() is a sentence for the user (translated) and whose
``code`` is stable for the API and the stored record: not configured, budget exceeded, timeout,
unavailable (429/5xx after the retries), rejected (a 4xx that retrying cannot fix). Their ``reason``
and ``params`` are what to keep to say it again later in another language: ``error_message(reason, params)``.
Call it from actors, never from a request: an answer can take a minute.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.cache import cache
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from buildx import metrics
from buildx.models import LLMCall

log = logging.getLogger(__name__)

# 408 request timeout, 409 lock timeout, 429 rate limit and every 5xx are worth another try.
RETRYABLE_STATUS = {408, 409, 429}


class LLMError(Exception):
    """A call that failed: ``reason`` (a key of ERROR_MESSAGES) and its ``params`` say why, for the user;
    ``str()`` renders them in the active language, so a caller that keeps the reason and params (the
    feedback's note) can show the sentence later in the viewer's language."""

    code = "llm_error"
    attempts = 0  # HTTP attempts made before giving up

    def __init__(self, reason: str, *, params: dict | None = None, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.params = dict(params or {})
        self.detail = detail  # for logs and the LLMCall row, not for the user

    @property
    def message(self) -> str:
        return error_message(self.reason, self.params)

    def __str__(self) -> str:
        return self.message


class LLMNotConfigured(LLMError):
    code = "not_configured"


class LLMBudgetExceeded(LLMError):
    code = "budget_exceeded"


class LLMUnavailable(LLMError):
    code = "unavailable"


class LLMTimeout(LLMUnavailable):
    code = "timeout"


class LLMRejected(LLMError):
    code = "rejected"


@dataclass(frozen=True)
class LLMAnswer:
    text: str
    tokens_in: int
    tokens_out: int
    cached: bool
    latency_ms: int
    model: str
    cost: Decimal = Decimal(0)
    finish_reason: str = "stop"  # "length" when max_tokens cut the answer short
    call_id: int | None = None  # the LLMCall row


def is_configured() -> bool:
    return bool(settings.LLM_ENABLED)


# What a user is told when a call fails, by reason (LLMError.reason). Lazy: rendered where it is shown.
ERROR_MESSAGES: dict[str, Any] = {
    "not_configured": _(
        "No AI model is configured on this BuildX server, so this feature is off. Everything else "
        "(the compiled code, training and the rule-based feedback) works without it. An administrator "
        "can set OPENAI_API_KEY, or OPENAI_BASE_URL for a local model server."
    ),
    "budget_exceeded": _(
        "You have used this hour's AI allowance (%(used)s of %(budget)s tokens). Try again in about "
        "%(minutes)s minutes; the compiled code and the rule-based feedback work in the meantime."
    ),
    "timeout": _("The AI model did not answer within %(seconds)s seconds. Try again later."),
    "unreachable": _("The AI model's server cannot be reached. Try again later."),
    "rate_limited": _("The AI model is busy (rate limited). Try again in a few minutes."),
    "server_error": _("The AI model's server had an error (%(status)s). Try again later."),
    "bad_key": _(
        "The AI model's server refused BuildX's API key. An administrator needs to check OPENAI_API_KEY."
    ),
    "unknown_model": _(
        "The AI model's server does not know the configured model. An administrator needs to check OPENAI_MODEL."
    ),
    "refused": _("The AI model's server refused the request (HTTP %(status)s)."),
    "empty_answer": _("The AI model sent an empty answer. Try again later."),
    "unreadable": _("The AI model sent an answer BuildX cannot read."),
}


class _Params(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def error_message(reason: str, params: dict | None = None) -> str:
    """The sentence for a failure's reason in the active language ("" for a reason this version lacks)."""
    text = ERROR_MESSAGES.get(reason)
    return str(text) % _Params(params or {}) if text is not None else ""


def not_configured_message() -> str:
    return error_message("not_configured")


def prompt_hash(*, model: str, messages: list[dict], params: dict) -> str:
    canonical = json.dumps(
        {"model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def cost_of(tokens_in: int, tokens_out: int) -> Decimal:
    price_in = Decimal(str(settings.LLM_PRICE_PER_1K_INPUT))
    price_out = Decimal(str(settings.LLM_PRICE_PER_1K_OUTPUT))
    cost = (tokens_in * price_in + tokens_out * price_out) / 1000
    return cost.quantize(Decimal("0.000001"))


def hourly_usage(user: AbstractBaseUser) -> int:
    """Tokens the user paid for (cache hits excluded) in the last hour."""
    from django.db.models import F, Sum

    since = timezone.now() - timedelta(hours=1)
    total = LLMCall.objects.filter(user_id=user.pk, cached=False, created_at__gte=since).aggregate(
        total=Sum(F("tokens_in") + F("tokens_out"))
    )["total"]
    return int(total or 0)


def chat(
    *,
    user: AbstractBaseUser | None,
    purpose: str,
    messages: list[dict],
    temperature: float = 0.0,
    max_tokens: int | None = None,
    use_cache: bool = True,
) -> LLMAnswer:
    """Ask the configured model; see the module docstring for what is recorded and raised."""
    if not is_configured():
        raise LLMNotConfigured("not_configured")

    model = settings.OPENAI_MODEL
    params: dict[str, Any] = {"temperature": temperature}
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    key = prompt_hash(model=model, messages=messages, params=params)
    started = time.monotonic()

    acquired = False
    if use_cache:
        hit = _cache_get(key)
        if hit is None:
            acquired = cache.add(_flight_key(key), 1, timeout=_flight_seconds())
            if not acquired:
                # The same question is being asked right now (a double click, two workers): wait for
                # that answer instead of paying for it a second time.
                hit = _wait_for_answer(key)
        if hit is not None:
            call = _record(
                user=user,
                purpose=purpose,
                model=model,
                key=key,
                tokens_in=hit["tokens_in"],
                tokens_out=hit["tokens_out"],
                cost=Decimal(0),
                latency_ms=_ms_since(started),
                cached=True,
                attempts=0,
                response=hit["text"],
            )
            return LLMAnswer(
                text=hit["text"],
                tokens_in=hit["tokens_in"],
                tokens_out=hit["tokens_out"],
                cached=True,
                latency_ms=call.latency_ms,
                model=model,
                finish_reason=hit.get("finish_reason", "stop"),
                call_id=call.id,
            )
    try:
        return _ask(
            user=user,
            purpose=purpose,
            model=model,
            key=key,
            messages=messages,
            params=params,
            started=started,
        )
    finally:
        if acquired:
            cache.delete(_flight_key(key))


def _ask(
    *, user, purpose: str, model: str, key: str, messages: list[dict], params: dict, started: float
) -> LLMAnswer:
    _check_budget(user=user, purpose=purpose, model=model, key=key)

    attempts = tokens_in = tokens_out = 0
    try:
        completion, attempts = _create_with_retries(model=model, messages=messages, params=params)
        text, finish_reason, tokens_in, tokens_out = _read_completion(completion)
        if not text.strip():
            # Paid for all the same: the tokens are recorded with the error.
            raise LLMUnavailable("empty_answer", detail=f"finish_reason={finish_reason}")
    except LLMError as exc:
        _record(
            user=user,
            purpose=purpose,
            model=model,
            key=key,
            latency_ms=_ms_since(started),
            attempts=exc.attempts or attempts,
            error=exc.code,
            error_detail=exc.detail,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost=cost_of(tokens_in, tokens_out),
        )
        raise

    cost = cost_of(tokens_in, tokens_out)
    call = _record(
        user=user,
        purpose=purpose,
        model=model,
        key=key,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost=cost,
        latency_ms=_ms_since(started),
        attempts=attempts,
        response=text,
    )
    # A cut-off answer is not worth reusing: the caller may ask again with more room.
    if finish_reason == "stop":
        cache.set(
            _cache_key(key),
            {"text": text, "tokens_in": tokens_in, "tokens_out": tokens_out, "finish_reason": finish_reason},
            timeout=settings.LLM_CACHE_TTL_S,
        )
    return LLMAnswer(
        text=text,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cached=False,
        latency_ms=call.latency_ms,
        model=model,
        cost=cost,
        finish_reason=finish_reason,
        call_id=call.id,
    )


# --- internals -------------------------------------------------------------------------------------


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _cache_key(key: str) -> str:
    return f"{settings.LLM_CACHE_PREFIX}:{key}"


def _flight_key(key: str) -> str:
    return f"{settings.LLM_CACHE_PREFIX}:asking:{key}"


def _flight_seconds() -> float:
    """The longest one chat() can take: every attempt timing out, with the longest backoff between."""
    retries = max(0, int(settings.LLM_MAX_RETRIES))
    return settings.LLM_TIMEOUT_S * (retries + 1) + settings.LLM_BACKOFF_MAX_S * retries + 1


def _wait_for_answer(key: str) -> dict | None:
    deadline = time.monotonic() + _flight_seconds()
    while time.monotonic() < deadline:
        hit = cache.get(_cache_key(key))
        if hit is not None:
            return hit
        if cache.get(_flight_key(key)) is None:
            return None  # the other call ended without an answer to share: ask ourselves
        time.sleep(0.05)
    return None


def _cache_get(key: str) -> dict | None:
    hit = cache.get(_cache_key(key))
    if hit is not None:
        return hit
    since = timezone.now() - timedelta(seconds=settings.LLM_CACHE_TTL_S)
    row = (
        LLMCall.objects.filter(prompt_hash=key, cached=False, error="", created_at__gte=since)
        .order_by("-created_at")
        .first()
    )
    if row is None:
        return None
    hit = {"text": row.response, "tokens_in": row.tokens_in, "tokens_out": row.tokens_out}
    cache.set(_cache_key(key), hit, timeout=settings.LLM_CACHE_TTL_S)
    return hit


def _check_budget(*, user, purpose: str, model: str, key: str) -> None:
    budget = settings.LLM_USER_HOURLY_BUDGET
    if not budget or user is None:
        return
    used = hourly_usage(user)
    if used < budget:
        return
    # The window frees up as the oldest paid call in it turns an hour old.
    oldest = (
        LLMCall.objects.filter(
            user=user, cached=False, created_at__gte=timezone.now() - timedelta(hours=1), tokens_out__gt=0
        )
        .order_by("created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    minutes = 60
    if oldest is not None:
        minutes = max(1, math.ceil((oldest + timedelta(hours=1) - timezone.now()).total_seconds() / 60))
    error = LLMBudgetExceeded(
        "budget_exceeded",
        params={"used": used, "budget": budget, "minutes": minutes},
        detail=f"used={used} budget={budget}",
    )
    _record(user=user, purpose=purpose, model=model, key=key, error=error.code, error_detail=error.detail)
    raise error


@lru_cache(maxsize=8)
def _client(base_url: str, api_key: str, timeout_s: float):
    import openai

    # Retries are ours (below), so that each attempt is counted, the backoff follows our settings and
    # a long Retry-After ends the call with an answer instead of a stuck worker.
    return openai.OpenAI(
        api_key=api_key or "unused",  # local servers (vLLM, Ollama) take any key; the client wants one
        base_url=base_url or None,
        timeout=timeout_s,
        max_retries=0,
    )


def _create_with_retries(*, model: str, messages: list[dict], params: dict) -> tuple[Any, int]:
    import openai

    client = _client(settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY, float(settings.LLM_TIMEOUT_S))
    max_retries = max(0, int(settings.LLM_MAX_RETRIES))
    attempt = 0
    while True:
        attempt += 1
        retry_after: float | None = None
        try:
            return client.chat.completions.create(model=model, messages=messages, **params), attempt
        except openai.APITimeoutError as exc:
            failure: LLMError = LLMTimeout(
                "timeout", params={"seconds": _format_seconds(settings.LLM_TIMEOUT_S)}, detail=str(exc)
            )
        except openai.APIConnectionError as exc:
            failure = LLMUnavailable("unreachable", detail=repr(exc.__cause__ or exc))
        except openai.APIStatusError as exc:
            status = exc.status_code
            detail = f"HTTP {status}: {exc.message}"
            if status not in RETRYABLE_STATUS and status < 500:
                failure = LLMRejected(_rejection_reason(status), params={"status": status}, detail=detail)
                failure.attempts = attempt
                raise failure from exc
            if status == 429:
                failure = LLMUnavailable("rate_limited", detail=detail)
            else:
                failure = LLMUnavailable("server_error", params={"status": status}, detail=detail)
            retry_after = _retry_after_seconds(exc.response.headers)

        failure.attempts = attempt
        if attempt > max_retries:
            raise failure
        if retry_after is not None and retry_after > settings.LLM_RETRY_AFTER_MAX_S:
            raise failure  # the server asks for a longer pause than a waiting user should sit through
        delay = retry_after if retry_after is not None else _backoff(attempt)
        log.info("LLM attempt %s failed (%s); retrying in %.2fs", attempt, failure.detail, delay)
        time.sleep(delay)


def _backoff(attempt: int) -> float:
    delay = min(settings.LLM_BACKOFF_BASE_S * 2 ** (attempt - 1), settings.LLM_BACKOFF_MAX_S)
    return delay * (1 - 0.25 * random.random())  # jitter, so that workers do not retry in step


def _retry_after_seconds(headers) -> float | None:
    """Retry-After as seconds (the -ms variant, seconds, or an HTTP date), or None."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def _rejection_reason(status: int) -> str:
    if status in (401, 403):
        return "bad_key"
    if status == 404:
        return "unknown_model"
    return "refused"


def _read_completion(completion: Any) -> tuple[str, str, int, int]:
    try:
        choice = completion.choices[0]
        text = choice.message.content or ""
        finish_reason = choice.finish_reason or "stop"
    except (AttributeError, IndexError, TypeError) as exc:
        raise LLMUnavailable("unreadable", detail=repr(exc)) from exc
    usage = getattr(completion, "usage", None)
    tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
    tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
    return text, finish_reason, tokens_in, tokens_out


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}"


def _record(
    *,
    user,
    purpose: str,
    model: str,
    key: str,
    tokens_in: int = 0,
    tokens_out: int = 0,
    cost: Decimal = Decimal(0),
    latency_ms: int = 0,
    cached: bool = False,
    attempts: int = 0,
    error: str = "",
    error_detail: str = "",
    response: str = "",
):
    metrics.observe_llm_call(
        purpose=purpose,
        outcome="cached" if cached else (error or "ok"),
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost=float(cost),
        latency_s=latency_ms / 1000,
    )
    return LLMCall.objects.create(
        user=user,
        purpose=purpose,
        model=model[:100],
        prompt_hash=key,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost=cost,
        latency_ms=latency_ms,
        cached=cached,
        attempts=attempts,
        error=error,
        error_detail=error_detail[:2000],
        response=response,
    )
