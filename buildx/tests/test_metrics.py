"""/metrics: who may scrape it, and what it says (parsed with prometheus_client's own parser)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from buildx import llm

TOKEN = "scrape-token-for-tests-0123456789"


def parse(text: str) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted labels: value}} of an exposition."""
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.fixture
def scrape_token(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []
    return TOKEN


def scrape(client, token: str = TOKEN) -> dict[str, dict[tuple, float]]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    return parse(response.content.decode())


@pytest.mark.django_db
def test_it_refuses_a_scrape_without_the_token_or_with_another(client, scrape_token):
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


@pytest.mark.django_db
def test_with_nothing_configured_nobody_may_scrape(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = []
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


@pytest.mark.django_db
def test_an_allowed_network_may_scrape_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.5").status_code == 403
    # The address is the connection's (Daphne's proxy headers are nginx's to set): a header is not one.
    assert (
        client.get("/metrics", REMOTE_ADDR="192.168.1.5", HTTP_X_FORWARDED_FOR="10.1.2.3").status_code == 403
    )


@pytest.mark.django_db
def test_it_has_django_prometheus_request_metrics_and_buildx_gauges(client, alice, scrape_token):
    client.force_login(alice)
    assert client.get("/dashboard/").status_code == 200
    metrics = scrape(client)
    by_view = metrics["django_http_requests_latency_seconds_by_view_method_count"]
    assert any(dict(labels).get("view") == "dashboard" for labels in by_view)
    assert sum(
        v for k, v in metrics["django_http_responses_total_by_status_total"].items() if ("status", "200") in k
    )
    assert sum(metrics["django_db_execute_total"].values()) > 0  # the database wrapper counts queries
    # Runs by status from the database: every status, zero included.
    assert metrics["buildx_runs"][(("status", "queued"),)] == 0
    assert (("queue", "training"),) in metrics["buildx_queue_messages"]
    assert (("queue", "training"),) in metrics["buildx_queue_oldest_message_age_seconds"]


@pytest.mark.django_db
def test_llm_calls_are_counted_by_purpose_and_outcome_with_their_tokens_and_cost(
    client, alice, llm_server, scrape_token
):
    before = scrape(client)
    llm_server.script("Hello")
    llm.chat(user=alice, purpose="feedback", messages=[{"role": "user", "content": "hi"}])
    llm.chat(user=alice, purpose="feedback", messages=[{"role": "user", "content": "hi"}])  # cached
    after = scrape(client)
    call = llm.LLMCall.objects.filter(user=alice, cached=False).get()

    def delta(name: str, **labels: str) -> float:
        key = tuple(sorted(labels.items()))
        return after.get(name, {}).get(key, 0.0) - before.get(name, {}).get(key, 0.0)

    assert delta("buildx_llm_calls_total", purpose="feedback", outcome="ok") == 1
    assert delta("buildx_llm_calls_total", purpose="feedback", outcome="cached") == 1
    assert delta("buildx_llm_tokens_total", purpose="feedback", direction="input") == call.tokens_in
    assert delta("buildx_llm_tokens_total", purpose="feedback", direction="output") == call.tokens_out
    assert delta("buildx_llm_cost_dollars_total", purpose="feedback") == pytest.approx(float(call.cost))
    assert delta("buildx_llm_latency_seconds_count", purpose="feedback") >= 1
