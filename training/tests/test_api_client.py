"""An API client with nothing but a login and what the API answers can find a design's version and train it."""

from __future__ import annotations

import pytest
from django.test import Client

from buildx.test import PASSWORD
from training.models import Run

pytestmark = pytest.mark.django_db

AUTH = "/api/auth/app/v1"


class ApiClient:
    """Speaks to the API as a program would: a JWT in a header, absolute URLs followed as given."""

    def __init__(self, email: str) -> None:
        self.http = Client()
        login = self.http.post(
            f"{AUTH}/auth/login", {"email": email, "password": PASSWORD}, content_type="application/json"
        )
        assert login.status_code == 200, login.content
        self.headers = {"Authorization": f"Bearer {login.json()['meta']['access_token']}"}

    def get(self, url: str):
        return self.http.get(url, headers=self.headers)

    def post(self, url: str, body: dict):
        return self.http.post(url, body, content_type="application/json", headers=self.headers)


def test_a_client_that_starts_from_the_api_root_creates_a_run(alice):
    api = ApiClient("alice@example.com")
    root = api.get("/api/v1/").json()
    starters = api.get(root["starters"]).json()
    assert starters, "the API offers starter designs"
    design = api.post(root["designs"], {"starter": starters[0]["slug"]})
    assert design.status_code == 201, design.content
    latest = design.json()["latest_version"]
    assert isinstance(latest["id"], int) and latest["number"] == 1

    run = api.post(root["runs"], {"design_version": latest["id"]})

    assert run.status_code == 201, run.content
    body = run.json()
    assert body["design_version"] == latest["id"] and body["design"] == design.json()["id"]
    assert Run.objects.get(pk=body["id"]).owner == alice


def test_a_run_can_name_its_version_by_design_and_number(alice):
    api = ApiClient("alice@example.com")
    design = api.post("/api/v1/designs/", {"starter": "tiny_cnn_digits"}).json()
    versions = api.get(f"/api/v1/designs/{design['id']}/versions/").json()["results"]
    assert [v["id"] for v in versions] == [design["latest_version"]["id"]]
    detail = api.get(f"/api/v1/designs/{design['id']}/versions/1/").json()
    assert detail["id"] == design["latest_version"]["id"]

    run = api.post("/api/v1/runs/", {"design": design["id"], "version": 1})

    assert run.status_code == 201, run.content
    assert run.json()["design_version"] == design["latest_version"]["id"]
    assert run.json()["version_number"] == 1


def test_another_users_version_is_a_404_however_it_is_named(alice, bob):
    design = ApiClient("alice@example.com").post("/api/v1/designs/", {"starter": "tiny_cnn_digits"}).json()
    mallory = ApiClient("bob@example.com")

    by_id = mallory.post("/api/v1/runs/", {"design_version": design["latest_version"]["id"]})
    by_number = mallory.post("/api/v1/runs/", {"design": design["id"], "version": 1})
    missing = ApiClient("alice@example.com").post("/api/v1/runs/", {"design": design["id"], "version": 9})

    for response in (by_id, by_number, missing):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert not Run.objects.exists()


def test_a_run_request_names_its_version_one_way(alice):
    api = ApiClient("alice@example.com")
    design = api.post("/api/v1/designs/", {"starter": "tiny_cnn_digits"}).json()
    version_id = design["latest_version"]["id"]
    cases = [
        ({}, "design_version"),
        ({"design_version": version_id, "design": design["id"], "version": 1}, "design_version"),
        ({"design": design["id"]}, "version"),
        ({"version": 1}, "design"),
    ]
    for body, field in cases:
        response = api.post("/api/v1/runs/", body)
        assert response.status_code == 400, body
        assert field in response.json()["error"]["fields"], (body, response.json())
    assert not Run.objects.exists()
