"""The superusers' health page (/admin/health/): workers, queues, runs by status, recent failures."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model

from buildx import worker_metrics
from training.models import Run
from training.tests.conftest import make_design


@pytest.fixture
def root(db):
    return get_user_model().objects.create_superuser(email="root@example.com", password="x-long-passphrase-1")


def test_a_superuser_sees_workers_queues_and_recent_failures(client, root, alice, settings):
    version, artifact = make_design(alice, epochs=1)
    failed = Run.objects.create(
        owner=alice, design_version=version, code_artifact=artifact, dataset="digits", epochs=1,
        status=Run.Status.FAILED, cause="out_of_memory", error="The run used more memory than allowed.",
    )  # fmt: skip
    name = f"health-test-host:{time.time_ns()}"
    worker_metrics.heartbeats_write(
        name, {"host": "health-test-host", "pid": 1, "queues": ["training"], "threads": 1, "started": time.time(),
               "seen": time.time(), "gpus": [{"gpu": "0", "utilization": 0.5, "memory_used": 2**30,
                                              "memory_total": 2**34}]},
    )  # fmt: skip
    try:
        client.force_login(root)
        response = client.get("/admin/health/")
        assert response.status_code == 200
        page = response.content.decode()
        assert name in page and "GPU 0: 0.50 busy" in page
        assert 'id="health-queues"' in page and "<td>training</td>" in page
        assert f"/admin/training/run/{failed.pk}/change/" in page and "out_of_memory" in page
    finally:
        worker_metrics.heartbeats_remove(name)


def test_it_is_not_for_instructors_students_or_strangers(client, alice, carol):
    carol.is_staff = True
    carol.save()
    client.force_login(carol)
    assert client.get("/admin/health/").status_code == 404
    client.force_login(alice)
    assert client.get("/admin/health/").status_code == 302  # to the admin's login
    client.logout()
    assert client.get("/admin/health/").status_code == 302
