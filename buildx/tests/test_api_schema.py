"""What the OpenAPI fuzz (test_api_fuzz.py) found, pinned one by one: the schema documents every answer
the API gives, and the API answers in its own shape wherever a client can reach it."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from training.models import Run


@pytest.fixture(scope="module")
def schema(django_db_blocker) -> dict:
    with django_db_blocker.unblock():
        return json.loads(Client().get("/api/v1/schema/?format=json").content)


@pytest.mark.django_db
def test_a_path_under_the_api_that_names_nothing_is_the_apis_json_404(alice):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    for path in [
        "/api/v1/nothing/",
        "/api/v1/designs/1.5/",
        "/api/v1/runs/true/stop/",
        "/api/v1/designs/%0A/",
    ]:
        for method in (browser.get, browser.post):
            response = method(path)  # a POST with the session and no CSRF token: still the JSON 404
            assert response.status_code == 404, (path, method)
            assert response["Content-Type"] == "application/json"
            assert response.json() == {"error": {"code": "not_found", "message": "Not found."}}


@pytest.mark.django_db
def test_a_path_missing_only_its_slash_is_sent_on_with_method_and_query_kept(alice_client):
    response = alice_client.get("/api/v1/runs?status=queued")
    assert response.status_code == 308 and response["Location"] == "/api/v1/runs/?status=queued"
    assert alice_client.post("/api/v1/runs", {}, content_type="application/json").status_code == 308


def test_every_operation_documents_the_error_answers_it_can_give(schema):
    error = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "401" in responses, (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            if method in ("post", "patch", "delete"):
                assert {"400", "403", "413"} <= set(responses), (method, path)
    runs = schema["paths"]["/api/v1/runs/"]["post"]["responses"]
    assert runs["404"]["content"]["application/json"]["schema"] == error
    for path in ["/api/v1/runs/{id}/stop/", "/api/v1/runs/{id}/resume/", "/api/v1/runs/{id}/predict/"]:
        assert "409" in schema["paths"][path]["post"]["responses"], path
    assert "429" in schema["paths"]["/api/v1/runs/{id}/predict/"]["post"]["responses"]
    assert "409" in schema["paths"]["/api/v1/runs/{id}/export/{kind}/"]["get"]["responses"]


def test_the_schema_says_what_runs_and_versions_really_hold(schema):
    components = schema["components"]["schemas"]
    assert components["Run"]["properties"]["queue_position"].get("nullable") is True  # null unless queued
    assert "id" in components["VersionSummary"]["properties"]
    create = components["RunCreate"]["properties"]
    assert {"design_version", "design", "version", "code_artifact"} <= set(create)


def test_the_run_stream_is_in_the_schema(schema):
    stream = schema["paths"]["/api/v1/runs/{id}/stream/"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert {p["name"] for p in stream["parameters"]} == {"id", "Last-Event-ID", "after"}
    assert {"204", "400", "401", "404", "429"} <= set(stream["responses"])


@pytest.mark.django_db
def test_a_rating_sent_as_a_form_without_helpful_is_refused(alice, alice_client):
    from accounts.tests.conftest import make_run
    from feedback.models import Feedback

    run = make_run(alice, design_name="Alicenet", status=Run.Status.SUCCEEDED, accuracy=0.9)
    Feedback.objects.create(run=run, status=Feedback.Status.READY, findings=[])

    response = alice_client.post(f"/api/v1/runs/{run.pk}/feedback/rate/", {"other": "x"})  # multipart

    assert response.status_code == 400
    assert "helpful" in response.json()["error"]["fields"]
    assert Feedback.objects.get(run=run).helpful is None  # not "not helpful"
    # Positive control: the same form with the field rates it.
    assert alice_client.post(f"/api/v1/runs/{run.pk}/feedback/rate/", {"helpful": "true"}).status_code == 200
    assert Feedback.objects.get(run=run).helpful is True
