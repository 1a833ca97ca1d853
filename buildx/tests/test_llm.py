"""buildx.llm through the real openai client, over HTTP, against the scripted local server."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.utils import timezone

from buildx import llm
from buildx.models import LLMCall
from buildx.testing.openai_server import Reply

QUESTION = [
    {"role": "system", "content": "You explain CNN training to beginners."},
    {"role": "user", "content": "Why is my validation accuracy lower than my training accuracy?"},
]


def ask(user, messages=QUESTION, **kwargs):
    return llm.chat(user=user, purpose=LLMCall.Purpose.FEEDBACK, messages=messages, **kwargs)


def test_it_answers_and_records_tokens_cost_and_latency(llm_server, alice, settings):
    settings.LLM_PRICE_PER_1K_INPUT = 0.5
    settings.LLM_PRICE_PER_1K_OUTPUT = 1.5
    llm_server.script(
        Reply(content="Your model memorises the training set.", tokens_in=1000, tokens_out=2000)
    )

    answer = ask(alice)

    assert answer.text == "Your model memorises the training set."
    assert (answer.tokens_in, answer.tokens_out, answer.cached) == (1000, 2000, False)
    assert answer.cost == Decimal("3.5")
    (request,) = llm_server.chat_requests
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.body["model"] == "test-model"
    assert request.body["messages"] == QUESTION
    assert request.body["temperature"] == 0

    call = LLMCall.objects.get()
    assert call.id == answer.call_id
    assert (call.user, call.purpose, call.model) == (alice, "feedback", "test-model")
    assert (call.tokens_in, call.tokens_out, call.cost) == (1000, 2000, Decimal("3.5"))
    assert call.attempts == 1 and call.error == "" and not call.cached
    assert call.latency_ms >= 0 and call.response == answer.text
    assert call.prompt_hash == llm.prompt_hash(
        model="test-model", messages=QUESTION, params={"temperature": 0.0}
    )


def test_the_same_question_is_paid_once_and_then_answered_from_the_cache(llm_server, alice, bob):
    llm_server.script("Dropout helps.")

    first = ask(alice)
    second = ask(alice)
    third = ask(bob)

    assert len(llm_server.chat_requests) == 1
    assert first.text == second.text == third.text == "Dropout helps."
    assert (first.cached, second.cached, third.cached) == (False, True, True)
    paid, *hits = LLMCall.objects.order_by("id")
    assert paid.cost > 0 and not paid.cached
    assert [(h.cached, h.cost, h.attempts) for h in hits] == [(True, 0, 0), (True, 0, 0)]


def test_another_temperature_or_model_is_another_question(llm_server, alice, settings):
    llm_server.script("one", "two", "three")

    assert ask(alice).text == "one"
    assert ask(alice, temperature=0.7).text == "two"
    settings.OPENAI_MODEL = "other-model"
    assert ask(alice).text == "three"
    assert len(llm_server.chat_requests) == 3


def test_the_cache_survives_a_flush_of_djangos_cache_through_the_call_table(llm_server, alice, settings):
    llm_server.script("Use a smaller learning rate.")
    ask(alice)
    key = llm.prompt_hash(model="test-model", messages=QUESTION, params={"temperature": 0.0})
    cache.delete(f"{settings.LLM_CACHE_PREFIX}:{key}")

    again = ask(alice)

    assert again.cached and again.text == "Use a smaller learning rate."
    assert len(llm_server.chat_requests) == 1


def test_use_cache_false_asks_again(llm_server, alice):
    llm_server.script("first", "second")
    ask(alice)
    assert ask(alice, use_cache=False).text == "second"
    assert len(llm_server.chat_requests) == 2


def test_a_429_is_retried_after_the_servers_retry_after(llm_server, alice):
    llm_server.script(
        Reply(status=429, content="Rate limit reached", headers={"Retry-After": "0.3"}), "Fine now."
    )

    answer = ask(alice)

    assert answer.text == "Fine now."
    first, second = llm_server.chat_requests
    assert second.at - first.at >= 0.3
    call = LLMCall.objects.get()
    assert call.attempts == 2 and call.error == ""


def test_server_errors_are_retried_with_backoff_until_one_succeeds(llm_server, alice):
    llm_server.script(Reply(status=500), Reply(status=503), "Recovered.")

    assert ask(alice).text == "Recovered."
    assert len(llm_server.chat_requests) == 3
    assert LLMCall.objects.get().attempts == 3


def test_server_errors_past_the_retries_end_in_an_error_the_user_can_read(llm_server, alice):
    llm_server.script(*[Reply(status=500, content="boom")] * 5)

    with pytest.raises(llm.LLMUnavailable) as raised:
        ask(alice)

    assert "server had an error (500)" in str(raised.value)
    assert len(llm_server.chat_requests) == 3  # the first try and LLM_MAX_RETRIES=2 more
    call = LLMCall.objects.get()
    assert (call.error, call.attempts, call.tokens_in, call.cost) == ("unavailable", 3, 0, 0)
    assert "HTTP 500" in call.error_detail
    assert call.response == ""


def test_a_failed_question_is_not_cached(llm_server, alice):
    llm_server.script(*[Reply(status=500)] * 3, "Now it works.")
    with pytest.raises(llm.LLMUnavailable):
        ask(alice)

    assert ask(alice).text == "Now it works."


def test_a_model_slower_than_the_timeout_ends_in_a_timeout(llm_server, alice, settings):
    settings.LLM_TIMEOUT_S = 0.3
    settings.LLM_MAX_RETRIES = 1
    llm_server.script(Reply(content="too late", delay_s=2), Reply(content="too late", delay_s=2))

    with pytest.raises(llm.LLMTimeout) as raised:
        ask(alice)

    assert "did not answer within 0.3 seconds" in str(raised.value)
    assert len(llm_server.chat_requests) == 2
    call = LLMCall.objects.get()
    assert (call.error, call.attempts) == ("timeout", 2)


def test_a_timeout_then_an_answer_succeeds(llm_server, alice, settings):
    settings.LLM_TIMEOUT_S = 0.3
    llm_server.script(Reply(content="too late", delay_s=2), "In time.")

    assert ask(alice).text == "In time."


def test_a_retry_after_longer_than_a_user_should_wait_ends_the_call_at_once(llm_server, alice):
    llm_server.script(Reply(status=429, headers={"Retry-After": "600"}), "never asked")

    with pytest.raises(llm.LLMUnavailable) as raised:
        ask(alice)

    assert "busy" in str(raised.value)
    assert len(llm_server.chat_requests) == 1


def test_a_refused_api_key_is_not_retried(llm_server, alice, settings):
    settings.OPENAI_API_KEY = "wrong-key"

    with pytest.raises(llm.LLMRejected) as raised:
        ask(alice)

    assert "OPENAI_API_KEY" in str(raised.value)
    assert len(llm_server.chat_requests) == 1
    assert LLMCall.objects.get().error == "rejected"


def test_an_empty_answer_is_an_error_but_its_tokens_are_counted(llm_server, alice):
    llm_server.script(Reply(content="", tokens_in=50, tokens_out=0))

    with pytest.raises(llm.LLMUnavailable):
        ask(alice)

    call = LLMCall.objects.get()
    assert (call.error, call.tokens_in) == ("unavailable", 50)


def test_a_user_over_the_hourly_budget_is_refused_before_anything_is_sent(llm_server, alice, bob, settings):
    settings.LLM_USER_HOURLY_BUDGET = 1000
    llm_server.script(Reply(content="a", tokens_in=700, tokens_out=300), "for bob")
    ask(alice)

    with pytest.raises(llm.LLMBudgetExceeded) as raised:
        ask(alice, messages=[{"role": "user", "content": "Another question"}])

    assert "1000 of 1000 tokens" in str(raised.value)
    assert "about 60 minutes" in str(raised.value)
    assert len(llm_server.chat_requests) == 1
    refused = LLMCall.objects.filter(user=alice).order_by("-id").first()
    assert (refused.error, refused.tokens_in, refused.attempts) == ("budget_exceeded", 0, 0)
    # Bob has his own budget.
    assert ask(bob, messages=[{"role": "user", "content": "Bob's question"}]).text == "for bob"


def test_the_budget_counts_only_the_last_hour(llm_server, alice, settings):
    settings.LLM_USER_HOURLY_BUDGET = 1000
    old = LLMCall.objects.create(
        user=alice, model="test-model", prompt_hash="x", tokens_in=5000, tokens_out=5000
    )
    LLMCall.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(minutes=61))
    llm_server.script(Reply(content="Still within budget.", tokens_in=10, tokens_out=5))

    assert ask(alice).text == "Still within budget."
    assert llm.hourly_usage(alice) == 15


def test_a_cached_answer_is_served_even_over_the_budget(llm_server, alice, settings):
    settings.LLM_USER_HOURLY_BUDGET = 100
    llm_server.script(Reply(content="Cached wisdom.", tokens_in=90, tokens_out=20))
    ask(alice)

    again = ask(alice)

    assert again.cached and again.text == "Cached wisdom."
    assert len(llm_server.chat_requests) == 1


def test_without_an_llm_it_says_so_plainly_and_sends_and_stores_nothing(llm_off, openai_server, alice):
    assert not llm.is_configured()

    with pytest.raises(llm.LLMNotConfigured) as raised:
        ask(alice)

    assert raised.value.code == "not_configured"
    assert "No AI model is configured" in str(raised.value)
    assert "OPENAI_BASE_URL" in str(raised.value)
    assert openai_server.requests == []
    assert not LLMCall.objects.exists()


def test_the_home_page_still_works_without_an_llm(llm_off, client):
    assert client.get("/").status_code == 200


def test_the_same_question_asked_twice_at_once_is_paid_once(llm_server, transactional_db, alice, settings):
    import threading

    from django.db import connection

    settings.LLM_TIMEOUT_S = 5  # the slow first answer must not time out on a busy machine
    llm_server.script(Reply(content="Answer to both.", delay_s=0.5), "a second, paid answer")
    answers = []

    def ask_in_a_worker():
        try:
            answers.append(ask(alice))
        finally:
            connection.close()

    workers = [threading.Thread(target=ask_in_a_worker) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)

    assert len(llm_server.chat_requests) == 1
    assert [a.text for a in answers] == ["Answer to both.", "Answer to both."]
    assert sorted(a.cached for a in answers) == [False, True]
    assert LLMCall.objects.filter(cached=False).count() == 1
