"""A run's files in the bucket with no shared disk: one worker process trains it and is stopped, a second
worker process with its own empty disk resumes it from the bucket's checkpoint, and the web (this
process, its disk empty too) serves download, export and predict to the owner and nothing to another
user (issue 18)."""

from __future__ import annotations

import io
import uuid

import dramatiq
import pytest
import torch
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from PIL import Image

from training.models import Run, RunArtifact, RunEvent
from training.services.artifacts import object_key
from training.tests.conftest import make_design
from training.tests.ops_support import S3Server, WorkerGroup, files_under, use_bucket, wait_for
from training.tests.test_object_storage import s3_server  # noqa: F401 - the session's S3 server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not settings.REDIS_URL, reason="worker processes need Redis and PostgreSQL"),
]


@pytest.fixture
def bucket_and_queue(s3_server, transactional_db, settings, monkeypatch, tmp_path):  # noqa: F811
    import training.actors  # noqa: F401 - declares the training queue

    name = f"buildx-{uuid.uuid4().hex[:12]}"
    settings.MEDIA_ROOT = tmp_path / "web-media"
    use_bucket(settings, monkeypatch, s3_server, bucket=name, prefix="school")
    call_command("storage_setup", stdout=io.StringIO())
    dramatiq.get_broker().flush("training")
    yield name
    dramatiq.get_broker().flush("training")


def start_worker(tmp, server: S3Server, bucket: str) -> WorkerGroup:
    """A trainer on "another host": its own empty MEDIA_ROOT, the bucket through STORAGE_URL."""
    tmp.mkdir()
    group = WorkerGroup(
        tmp,
        processes=1,
        queues=["training"],
        extra_env={
            "MEDIA_ROOT": str(tmp / "media"),
            "STORAGE_URL": server.storage_url(bucket, "school"),
            "AWS_ACCESS_KEY_ID": "test-key-id",
            "AWS_SECRET_ACCESS_KEY": "test-secret-canary-4e2b",
            "RUNS_HEARTBEAT_INTERVAL": "0.5",
        },
    )
    return group


def png_digit() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(torch.randint(0, 255, (8, 8), dtype=torch.uint8).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_second_worker_with_an_empty_disk_resumes_from_the_bucket_and_the_web_serves_the_files(
    s3_server,  # noqa: F811
    bucket_and_queue,
    alice,
    bob,
    client,
    tmp_path,
):
    bucket = bucket_and_queue
    s3 = s3_server.client()
    first = start_worker(tmp_path / "first", s3_server, bucket)
    try:
        client.force_login(alice)
        version, artifact = make_design(alice, epochs=12)
        # The first training holds epoch 2 until the stop arrives: however fast or loaded the machine,
        # the stop lands mid-run with epoch 1's checkpoint in the bucket (a bare 12-epoch run of the
        # digits could end before the stop on an idle machine). The resumed run starts past epoch 0.
        loop = (
            "        for x, y in data.train.batches(BATCH_SIZE, shuffle=True, transform=TRAIN_TRANSFORM):\n"
        )
        assert artifact.code.count(loop) == 1
        artifact.code = artifact.code.replace(
            loop,
            loop + "            while start_epoch == 0 and epoch == 2 and not rt.stop_requested():\n"
            "                pass\n",
        )
        artifact.save(update_fields=["code"])
        response = client.post(
            "/api/v1/runs/",
            {"design_version": version.pk, "code_artifact": artifact.pk},
            content_type="application/json",
        )
        assert response.status_code == 201, response.content
        run = Run.objects.get(pk=response.json()["id"])
        wait_for(
            lambda: RunArtifact.objects.filter(run=run, kind=RunArtifact.Kind.CHECKPOINT_LAST).exists(),
            timeout=600,  # a conditional wait: long enough for a loaded two-core machine
            what="a stored checkpoint",
        )
        assert client.post(f"/api/v1/runs/{run.pk}/stop/").status_code == 202
        wait_for(lambda: Run.objects.get(pk=run.pk).is_finished(), timeout=300, what="the stop")
    finally:
        first.stop()
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED and run.checkpoint_epoch is not None
    stopped_at = run.checkpoint_epoch

    second = start_worker(tmp_path / "second", s3_server, bucket)
    try:
        assert client.post(f"/api/v1/runs/{run.pk}/resume/").status_code in (200, 202)
        wait_for(lambda: Run.objects.get(pk=run.pk).is_finished(), timeout=600, what="the resumed run")
        second_pids = second.pids()
    finally:
        second.stop()
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, (run.error, run.traceback)
    assert int(run.worker_id.split(":")[1]) in second_pids
    resumed = RunEvent.objects.filter(
        run=run, kind="run.log", payload__lines__icontains="Resuming from the checkpoint"
    )
    assert resumed.exists(), f"the second worker resumed from epoch {stopped_at}'s checkpoint in the bucket"

    # Every file in the bucket, none on any disk.
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="school/")["Contents"]}
    for stored in run.artifacts.all():
        assert object_key(stored.file.storage, stored.file.name) in keys
    kinds = set(run.artifacts.values_list("kind", flat=True))
    assert {"script", "model", "checkpoint_last", "checkpoint_best"} <= kinds
    for folder in (tmp_path / "first" / "media", tmp_path / "second" / "media", settings.MEDIA_ROOT):
        assert files_under(folder) == []
    # Each epoch's checkpoint replaced the last: the replaced ones are older versions in the bucket.
    last = run.artifacts.get(kind="checkpoint_last")
    versions = s3.list_object_versions(Bucket=bucket, Prefix=f"school/runs/{run.pk}/checkpoint_last/")
    assert len(versions["Versions"]) >= 2
    assert sum(v["IsLatest"] for v in versions["Versions"]) == 1
    assert any(
        v["IsLatest"] and v["Key"] == object_key(last.file.storage, last.file.name)
        for v in versions["Versions"]
    )

    # The web process (its disk empty) serves them to the owner: download, export, predict, pages.
    model = run.artifacts.get(kind="model")
    download = client.get(f"/api/v1/runs/{run.pk}/artifacts/model/")
    assert download.status_code == 200
    in_bucket = s3.get_object(Bucket=bucket, Key=object_key(model.file.storage, model.file.name))[
        "Body"
    ].read()
    assert b"".join(download.streaming_content) == in_bucket
    for kind in ("weights", "bundle", "card"):
        assert client.get(f"/api/v1/runs/{run.pk}/export/{kind}/").status_code == 200, kind
    predicted = client.post(
        f"/api/v1/runs/{run.pk}/predict/", {"images": [SimpleUploadedFile("d.png", png_digit())]}
    )
    assert predicted.status_code == 200, predicted.content
    assert len(predicted.json()["predictions"]) == 1
    assert client.get(f"/runs/{run.pk}/predict/").status_code == 200

    # Another user: by page, by API, by a guessed URL, nothing.
    client.force_login(bob)
    for url in (
        f"/runs/{run.pk}/",
        f"/runs/{run.pk}/predict/",
        f"/api/v1/runs/{run.pk}/artifacts/model/",
        f"/api/v1/runs/{run.pk}/artifacts/",
        f"/api/v1/runs/{run.pk}/export/weights/",
        f"/media/{model.file.name}",
        f"/media/school/{model.file.name}",
    ):
        assert client.get(url).status_code == 404, url
    assert (
        client.post(
            f"/api/v1/runs/{run.pk}/predict/", {"images": [SimpleUploadedFile("d.png", png_digit())]}
        ).status_code
        == 404
    )
