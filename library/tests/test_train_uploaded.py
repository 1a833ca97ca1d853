"""A run on an uploaded dataset, end to end: trained in the sandbox through the runs services (as the
worker does), measured by the platform, predicted on, exported. And the check through a real worker."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.test import Client

from designs import services as design_services
from library import services
from library.models import Dataset
from library.tests.conftest import COLOURS, class_png, three_classes, zip_of
from library.tests.test_sharing import spec_for
from training import services as run_services
from training.models import Run
from training.tests.conftest import wait_for


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the run's heartbeat and events use connections of their own
def test_a_student_trains_on_a_dataset_shared_with_the_course_predicts_and_exports(
    alice, carol, course_a, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.BUILDX_SANDBOX_THREADS = 1
    client = Client()
    client.force_login(alice)
    data = zip_of(three_classes(per_class=30))
    dataset = services.dataset_upload_whole(
        owner=carol, name="Colours", file=io.BytesIO(data), size=len(data)
    )
    dataset = services.dataset_check(dataset_id=dataset.pk)
    assert dataset is not None and dataset.status == Dataset.Status.READY
    services.dataset_share(dataset=dataset, user=carol, course=course_a)
    spec = spec_for(dataset.spec_name)
    spec["hyperparameters"] = {"epochs": 3, "batch_size": 16, "learning_rate": 0.01}
    design = design_services.design_create(owner=alice, name="Colour net", spec=spec)
    response = client.post(
        "/api/v1/runs/", {"design_version": design.versions.get().pk}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    run = run_services.run_claim(run_id=response.json()["id"])
    assert run is not None
    run_services.run_execute(run=run)
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, (run.cause, run.error, run.traceback)
    assert run.dataset_hash == dataset.content_hash
    assert run.metrics["accuracy"] > 0.6  # chance is 1/3
    assert run.metrics["class_names"] == ["blue", "green", "red"]

    answer = client.post(
        f"/api/v1/runs/{run.pk}/predict/", {"images": io.BytesIO(class_png(COLOURS["green"], seed=99_999))}
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["predictions"][0]["class"] == "green"

    card = client.get(f"/api/v1/runs/{run.pk}/export/card/")
    text = b"".join(card.streaming_content).decode() if card.streaming else card.content.decode()
    assert "Colours" in text and "blue 30" in text and dataset.content_hash in text
    bundle = client.get(f"/api/v1/runs/{run.pk}/export/bundle/")
    assert bundle.status_code == 200
    raw = b"".join(bundle.streaming_content) if bundle.streaming else bundle.content
    names = zipfile.ZipFile(io.BytesIO(raw)).namelist()
    readme = next(n for n in names if n.endswith("README.md"))
    text = zipfile.ZipFile(io.BytesIO(raw)).read(readme).decode()
    assert "shared with your course" in text and "/export/" not in text  # not hers to download
    assert any(n.endswith(".png") and "examples/" in n for n in names)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_on_the_default_queue_checks_an_upload(alice, settings, tmp_path):
    """The actor, not the service: a worker process (Redis) or worker threads (embedded) take the message."""
    import os
    import subprocess
    import sys

    import dramatiq

    import library.actors  # noqa: F401 - declares the actor on the broker

    data = zip_of(three_classes(per_class=5))
    client = Client()
    client.force_login(alice)
    proc = None
    worker = None
    if settings.EMBEDDED:
        worker = dramatiq.Worker(dramatiq.get_broker(), worker_threads=1, queues={"default"})
        worker.start()
    else:
        from django.db import connection

        db = connection.settings_dict
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
            "REDIS_URL": settings.REDIS_URL,
            "BUILDX_DATA_DIR": str(settings.DATA_DIR),
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "rundramatiq",
                "--processes",
                "1",
                "--threads",
                "1",
                "--queues",
                "default",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=open(tmp_path / "worker.log", "wb"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        response = client.post(
            "/api/v1/datasets/", {"name": "W", "file": io.BytesIO(data)}, format="multipart"
        )
        assert response.status_code == 201
        pk = response.json()["id"]
        dataset = wait_for(
            lambda: Dataset.objects.filter(pk=pk).exclude(status=Dataset.Status.CHECKING).first(),
            timeout=120,
            what="the worker's check",
        )
        assert dataset.status == Dataset.Status.READY, dataset.problems
    finally:
        if worker is not None:
            worker.stop(timeout=10_000)
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
