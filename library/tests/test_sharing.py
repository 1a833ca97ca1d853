"""Course sharing, and who gets 404 (page, API, WebSocket); designs and runs on an uploaded dataset;
built-in sets that are not installed; the admin's scoping."""

from __future__ import annotations

import io

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from buildx.asgi import application
from designs import services as design_services
from designs.validation import SpecError
from library import services
from library.models import Dataset
from library.tests.conftest import three_classes, zip_of
from training.models import Run


def ready_dataset(owner, name: str = "Colours", per_class: int = 6) -> Dataset:
    data = zip_of(three_classes(per_class=per_class))
    dataset = services.dataset_upload_whole(owner=owner, name=name, file=io.BytesIO(data), size=len(data))
    checked = services.dataset_check(dataset_id=dataset.pk)
    assert checked is not None and checked.status == "ready", checked and checked.problems
    return checked


def spec_for(dataset_name: str, classes: int = 3) -> dict:
    return {
        "model_name": "Tiny",
        "dataset": dataset_name,
        "preprocessing": [{"type": "Normalize"}],
        "layers": [
            {"type": "Conv2d", "name": "conv1", "out_channels": 8, "kernel_size": 3, "padding": 1},
            {"type": "ReLU", "name": "relu1"},
            {"type": "MaxPool2d", "name": "pool1", "kernel_size": 2},
            {"type": "Flatten", "name": "flatten"},
            {"type": "Linear", "name": "fc", "out_features": classes},
        ],
        "hyperparameters": {"epochs": 2, "batch_size": 16},
    }


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def shared(carol, course_a, course_b):
    dataset = ready_dataset(carol, name="Class colours")
    response = client_of(carol).post(
        f"/api/v1/datasets/{dataset.pk}/share/", {"course": course_a.pk}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    dataset.refresh_from_db()
    assert (dataset.visibility, dataset.course_id) == ("course", course_a.pk)
    return dataset


def test_a_student_of_the_course_sees_designs_and_trains_on_the_shared_dataset(shared, alice):
    client = client_of(alice)
    listed = [d for d in client.get("/api/v1/datasets/").json()["results"] if d["source"] == "upload"]
    assert [(d["id"], d["mine"], d["available"]) for d in listed] == [(shared.pk, False, True)]
    page = client.get(f"/datasets/{shared.pk}/")
    assert (
        page.status_code == 200 and b"Class colours" in page.content and b"dataset-manage" not in page.content
    )
    assert client.get(f"/api/v1/datasets/{shared.pk}/samples/").status_code == 200
    assert client.get(f"/api/v1/datasets/{shared.pk}/export/").status_code == 404  # not hers to download

    checked = client.post(
        "/api/v1/designs/validate/", {"spec": spec_for(shared.spec_name)}, content_type="application/json"
    )
    assert checked.status_code == 200, checked.content
    report = checked.json()["report"]
    assert report["input_shape"] == [3, 12, 12]
    assert report["dataset"]["class_names"] == ["blue", "green", "red"] and report["ready_to_train"]

    design = design_services.design_create(owner=alice, name="Mine", spec=spec_for(shared.spec_name))
    version = design.versions.get()
    response = client.post("/api/v1/runs/", {"design_version": version.pk}, content_type="application/json")
    assert response.status_code == 201, response.content
    run = Run.objects.get(pk=response.json()["id"])
    assert (run.dataset, run.dataset_ref_id, run.dataset_hash) == (
        shared.spec_name,
        shared.pk,
        shared.content_hash,
    )


def test_the_head_must_match_the_class_count(shared, alice):
    checked = client_of(alice).post(
        "/api/v1/designs/validate/",
        {"spec": spec_for(shared.spec_name, classes=10)},
        content_type="application/json",
    )
    report = checked.json()["report"]
    assert not report["ready_to_train"]
    assert any(
        "3 classes" in (i.get("message") or "") for i in report.get("errors", []) + report.get("warnings", [])
    )


def test_a_student_of_another_course_gets_404_by_page_and_api_and_cannot_design_with_it(shared, bob):
    client = client_of(bob)
    assert client.get(f"/datasets/{shared.pk}/").status_code == 404
    assert client.get(f"/api/v1/datasets/{shared.pk}/").status_code == 404
    assert client.get(f"/api/v1/datasets/{shared.pk}/samples/").status_code == 404
    assert [d for d in client.get("/api/v1/datasets/").json()["results"] if d["source"] == "upload"] == []
    checked = client.post(
        "/api/v1/designs/validate/", {"spec": spec_for(shared.spec_name)}, content_type="application/json"
    )
    assert checked.status_code == 400
    assert "dataset" in str(checked.json()["error"]["fields"])
    assert "blue" not in checked.content.decode()  # nothing of the dataset's facts leaks
    with pytest.raises(SpecError):  # the same answer as an unknown dataset
        design_services.design_create(owner=bob, name="Theirs", spec=spec_for(shared.spec_name))


def test_unsharing_takes_it_away_from_the_students(shared, carol, alice):
    assert client_of(alice).get(f"/api/v1/datasets/{shared.pk}/").status_code == 200
    client_of(carol).post(
        f"/api/v1/datasets/{shared.pk}/share/", {"course": None}, content_type="application/json"
    )
    assert client_of(alice).get(f"/api/v1/datasets/{shared.pk}/").status_code == 404


def test_only_an_instructor_of_the_course_shares_with_it(alice, course_a, course_b, carol):
    dataset = ready_dataset(alice, name="Alice's")
    response = client_of(alice).post(
        f"/api/v1/datasets/{dataset.pk}/share/", {"course": course_a.pk}, content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "not_instructor"
    carols = ready_dataset(carol, name="Carol's")
    other = client_of(carol).post(
        f"/api/v1/datasets/{carols.pk}/share/", {"course": course_b.pk}, content_type="application/json"
    )
    assert other.status_code == 400  # carol does not teach course B


def test_a_course_quota_is_checked_when_sharing(carol, course_a, settings):
    dataset = ready_dataset(carol)
    settings.DATASET_COURSE_QUOTA_BYTES = dataset.size - 1
    response = client_of(carol).post(
        f"/api/v1/datasets/{dataset.pk}/share/", {"course": course_a.pk}, content_type="application/json"
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "quota_course"


@pytest.mark.django_db(transaction=True)
async def test_the_websocket_tells_the_owner_how_the_check_goes_and_another_course_gets_not_found(
    alice, bob, data_dir
):
    data = zip_of(three_classes(per_class=4))
    dataset = await database_sync_to_async(services.dataset_upload_whole)(
        owner=alice, name="Live", file=io.BytesIO(data), size=len(data)
    )

    def socket_of(user) -> WebsocketCommunicator:
        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        headers = [
            (b"host", b"testserver"),
            (b"origin", b"http://testserver"),
            (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()),
        ]
        return WebsocketCommunicator(application, "/ws/", headers=headers)

    alice_ws = await database_sync_to_async(socket_of)(alice)
    assert (await alice_ws.connect())[0]
    await alice_ws.send_json_to({"type": "dataset", "dataset": dataset.pk})
    now = await alice_ws.receive_json_from(timeout=10)
    assert (now["type"], now["status"]) == ("dataset.status", "checking")

    bob_ws = await database_sync_to_async(socket_of)(bob)
    assert (await bob_ws.connect())[0]
    await bob_ws.send_json_to({"type": "dataset", "dataset": dataset.pk})
    refused = await bob_ws.receive_json_from(timeout=10)
    assert (refused["type"], refused["code"]) == ("error", "not_found")

    await database_sync_to_async(services.dataset_check)(dataset_id=dataset.pk)
    stages = []
    while True:
        message = await alice_ws.receive_json_from(timeout=30)
        assert message["type"] == "dataset.status" and message["dataset"] == dataset.pk
        stages.append(message["progress"].get("stage"))
        if message["status"] != "checking":
            break
    assert message["status"] == "ready"
    assert "checking" in stages and "decoding" in stages
    assert await bob_ws.receive_nothing(timeout=0.5)  # bob's socket heard nothing of it
    await alice_ws.disconnect()
    await bob_ws.disconnect()


@pytest.mark.parametrize(
    ("name", "classes"), [("MNIST", 10), ("CIFAR100", 100), ("SVHN", 10), ("EMNISTLetters", 26)]
)
def test_a_built_in_set_that_is_not_installed_is_refused_before_it_is_queued(
    alice_client, alice, name, classes
):
    listed = {d["name"]: d for d in alice_client.get("/api/v1/datasets/").json()["results"]}
    assert listed["digits"]["available"] and listed["shapes"]["available"]
    assert not listed[name]["available"] and listed[name]["status"] == "not_installed"
    assert f"python manage.py fetch_dataset {name}" in listed[name]["message"]
    assert listed[name]["num_classes"] == classes
    spec = spec_for(name, classes=classes)
    design = design_services.design_create(owner=alice, name="Lenet", spec=spec)
    response = alice_client.post(
        "/api/v1/runs/", {"design_version": design.versions.get().pk}, content_type="application/json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "dataset_not_installed"
    assert "not installed on this server" in error["message"]
    assert f"python manage.py fetch_dataset {name}" in error["message"]
    assert Run.objects.count() == 0
    page = alice_client.get("/datasets/")
    assert (
        b"Not installed on this server" in page.content and f"fetch_dataset {name}".encode() in page.content
    )


def test_a_new_built_in_set_is_ready_once_its_cache_is_built_and_not_before(alice_client, alice, data_dir):
    from designs.views import picker_datasets
    from sandbox.engine import datasets as engine_datasets
    from sandbox.tests.test_engine_datasets import write_svhn_folder

    def listed() -> dict:
        return {d["name"]: d for d in alice_client.get("/api/v1/datasets/").json()["results"]}["SVHN"]

    write_svhn_folder(data_dir / "SVHN")  # the files, copied in by hand: not ready until they are checked
    assert not listed()["available"]
    in_editor = picker_datasets(alice)["builtin"]
    assert not in_editor["SVHN"]["available"] and "fetch_dataset SVHN" in in_editor["SVHN"]["message"]
    assert not in_editor["CIFAR100"]["available"] and not in_editor["EMNISTLetters"]["available"]
    design = design_services.design_create(owner=alice, name="Digits", spec=spec_for("SVHN", classes=10))
    create = {"design_version": design.versions.get().pk}
    assert alice_client.post("/api/v1/runs/", create, content_type="application/json").status_code == 400

    cache = engine_datasets.ensure_cache("SVHN", data_dir=data_dir)  # what fetch_dataset does last
    assert listed()["available"] and listed()["status"] == "ready"
    assert picker_datasets(alice)["builtin"]["SVHN"] == {"available": True, "message": ""}
    assert alice_client.post("/api/v1/runs/", create, content_type="application/json").status_code == 201

    cache.write_bytes(cache.read_bytes()[:100])  # damaged afterwards: shown as not installed again
    assert not listed()["available"]


def test_a_dataset_that_runs_trained_on_cannot_be_deleted_until_they_are(alice, alice_client):
    dataset = ready_dataset(alice)
    design = design_services.design_create(owner=alice, name="Mine", spec=spec_for(dataset.spec_name))
    response = alice_client.post(
        "/api/v1/runs/", {"design_version": design.versions.get().pk}, content_type="application/json"
    )
    assert response.status_code == 201
    refused = alice_client.delete(f"/api/v1/datasets/{dataset.pk}/")
    assert (
        refused.status_code == 409 and "1 run trained on this dataset" in refused.json()["error"]["message"]
    )
    assert services.cache_path(dataset).is_file()
    Run.objects.all().delete()
    assert alice_client.delete(f"/api/v1/datasets/{dataset.pk}/").status_code == 204
    assert not services.dataset_folder(dataset).exists()


def test_rename_through_the_page(alice, alice_client):
    dataset = ready_dataset(alice)
    alice_client.post(f"/datasets/{dataset.pk}/rename/", {"name": "Colours v2"})
    dataset.refresh_from_db()
    assert dataset.name == "Colours v2"
    page = alice_client.get(f"/datasets/{dataset.pk}/")
    assert b"counts-chart" in page.content and b"3\xc3\x9712\xc3\x9712" in page.content


def test_the_admin_shows_an_instructor_their_courses_datasets_and_their_students_only(
    alice, bob, carol, dave, course_a, course_b
):
    ready = {
        who.email: ready_dataset(who, name=f"{who.first_name}'s set", per_class=3)
        for who in (alice, bob, dave)
    }
    services.dataset_share(dataset=ready[dave.email], user=dave, course=course_b)
    client = client_of(carol)
    response = client.get("/admin/library/dataset/")
    assert response.status_code == 200
    shown = {d.name for d in response.context["cl"].result_list}
    assert shown == {"Alice's set"}
    assert client.get(f"/admin/library/dataset/{ready[bob.email].pk}/change/").status_code == 302


def test_the_diagnosis_points_at_a_class_with_few_images_and_at_imbalance():
    from django.utils import translation

    from feedback.diagnosis import diagnose

    findings = diagnose(epochs=[], counts={"cats": 240, "dogs": 12, "birds": 80})
    small = [f for f in findings if f.code == "small_dataset"]
    assert len(small) == 1 and small[0].severity == "warning"
    assert "Class dogs has 12 images: add more" in small[0].explanation
    assert "imbalanced" in small[0].explanation
    with translation.override("ko"):
        assert "dogs" in small[0].explanation and "12" in small[0].explanation
    assert [f.code for f in diagnose(epochs=[], counts={"a": 50, "b": 60})] == []
