"""JSON bodies from the attacker's side: nested too deep or too large, on every endpoint that reads JSON.

Python's json module recurses per level, so 100,000 "[" used to end in a RecursionError (a 500) in
DRF's parser and in allauth's headless views; now every such body is a 400 in the API's error shape
before any view runs.
"""

from __future__ import annotations

import copy

import pytest

from designs import services as design_services
from training.models import Run
from training.tests.conftest import make_design

DEEP = "[" * 100_000 + "]" * 100_000

HEADLESS_LOGIN = "/api/auth/app/v1/auth/login"
JWT_REFRESH = "/api/auth/app/v1/tokens/refresh"


@pytest.fixture
def alices_finished_run(alice) -> Run:
    version, artifact = make_design(alice, epochs=1)
    return Run.objects.create(
        owner=alice,
        design_version=version,
        code_artifact=artifact,
        dataset="digits",
        status=Run.Status.SUCCEEDED,
    )


def assert_too_deep(response) -> None:
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "too_deep"
    assert "nested more than 64 levels deep" in error["message"]


@pytest.mark.django_db
def test_a_100000_deep_body_is_a_400_on_the_runs_and_predict_endpoints(alice_client, alices_finished_run):
    for url in (
        "/api/v1/runs/",
        f"/api/v1/runs/{alices_finished_run.pk}/predict/",
        "/api/v1/designs/validate/",
    ):
        assert_too_deep(alice_client.post(url, DEEP, content_type="application/json"))


@pytest.mark.django_db
def test_a_100000_deep_body_is_a_400_on_the_headless_login_and_the_jwt_refresh(client):
    for url in (HEADLESS_LOGIN, JWT_REFRESH):
        assert_too_deep(client.post(url, DEEP, content_type="application/json"))
        # allauth parses the body as JSON whatever the content type says.
        assert_too_deep(client.post(url, DEEP, content_type="text/plain"))
    body = '{"email": "alice@example.com", "password": ' + DEEP + "}"
    assert_too_deep(client.post(HEADLESS_LOGIN, body, content_type="application/json"))


@pytest.mark.django_db
def test_64_levels_reach_the_view_and_65_do_not(alice_client):
    def nested(levels: int) -> str:
        return "[" * levels + "]" * levels

    response = alice_client.post("/api/v1/designs/validate/", nested(64), content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_spec"
    assert_too_deep(
        alice_client.post("/api/v1/designs/validate/", nested(65), content_type="application/json")
    )


@pytest.mark.django_db
def test_a_normal_design_spec_still_validates(alice_client):
    spec = copy.deepcopy(design_services.starter_get(slug="tiny_cnn_digits")["spec"])
    response = alice_client.post("/api/v1/designs/validate/", spec, content_type="application/json")
    assert response.status_code == 200, response.json()
    assert response.json()["report"]["valid"] is True


@pytest.mark.django_db
def test_brackets_inside_strings_are_text_not_nesting(client, alice):
    password = '\\"[[[' + "[" * 10_000 + '{"'  # escaped quotes do not end the string early
    response = client.post(
        HEADLESS_LOGIN, {"email": "alice@example.com", "password": password}, content_type="application/json"
    )
    assert response.status_code in (400, 401), response.content[:300]
    assert "too_deep" not in response.content.decode()


@pytest.mark.django_db
def test_a_json_body_over_djangos_memory_limit_is_refused_in_the_api_shape(alice_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = '{"design_version": 1, "padding": "' + "x" * 20_000 + '"}'
    response = alice_client.post("/api/v1/runs/", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert "larger than 9 kB" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_a_multipart_upload_over_that_limit_still_reaches_the_view(
    alice_client, alices_finished_run, settings
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    image = SimpleUploadedFile("big.png", b"\x89PNG" + b"\x00" * 20_000)
    response = alice_client.post(f"/api/v1/runs/{alices_finished_run.pk}/predict/", {"images": [image]})
    # The view's own answer about this run (it has no weights), not a refusal of the body.
    assert response.status_code == 409 and response.json()["error"]["code"] == "no_weights"


def test_the_depth_scan_counts_brackets_outside_strings_only():
    from buildx.middleware import json_depth

    assert json_depth(b'{"a": [1, {"b": "[[[["}], "c": "\\\\"}') == 3
    assert json_depth(b'["\\"[[[", [[]]]') == 3
    assert json_depth(b'"' + b"[" * 100) == 0  # an unterminated string
    assert json_depth(DEEP.encode()) == 100_000
    assert json_depth(b'"\\""' * 600_000) == 0
    assert json_depth(b"[]" * 1_250_000) == 1
