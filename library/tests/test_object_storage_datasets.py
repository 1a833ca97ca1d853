"""An uploaded dataset in the bucket with no shared disk (issue 18): the web (this process) receives the zip in
chunks and moves it to an S3-compatible server (moto's server mode), a worker process with its own empty
disk checks it, another trains a run on it, and the web serves its export and samples from the bucket. No
local disk keeps anything but the trainer's copy of the tensor cache."""

from __future__ import annotations

import io
import uuid

import pytest
from django.conf import settings
from django.core.management import call_command

from library.models import Dataset
from library.tests.conftest import three_classes, zip_of
from library.tests.test_sharing import spec_for
from library.tests.test_upload import CHUNK, create, files_under, put
from training.models import Run
from training.tests.ops_support import S3_KEY_ID, S3_SECRET, S3Server, WorkerGroup, use_bucket, wait_for
from training.tests.test_object_storage import s3_server  # noqa: F401 - the session's S3 server
from training.tests.test_ops_metrics import queues  # noqa: F401 - empty training and default queues

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not settings.REDIS_URL, reason="worker processes need Redis and PostgreSQL"),
]


def worker_on_another_host(tmp, server: S3Server, bucket: str, queue: str) -> WorkerGroup:
    """A worker with its own empty data folder and media folder, and the bucket through STORAGE_URL."""
    tmp.mkdir()
    (tmp / "data").mkdir()
    return WorkerGroup(
        tmp,
        processes=1,
        queues=[queue],
        extra_env={
            "BUILDX_DATA_DIR": str(tmp / "data"),
            "MEDIA_ROOT": str(tmp / "media"),
            "STORAGE_URL": server.storage_url(bucket, "school"),
            "AWS_ACCESS_KEY_ID": S3_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        },
    )


@pytest.mark.usefixtures("queues")
def test_a_dataset_uploaded_on_the_web_is_checked_and_trained_on_by_workers_with_no_shared_disk(
    s3_server,  # noqa: F811
    transactional_db,
    alice,
    alice_client,
    data_dir,
    settings,
    monkeypatch,
    tmp_path,
):
    bucket = f"buildx-{uuid.uuid4().hex[:12]}"
    settings.MEDIA_ROOT = tmp_path / "web-media"
    use_bucket(settings, monkeypatch, s3_server, bucket=bucket, prefix="school")
    call_command("storage_setup", stdout=io.StringIO())
    s3 = s3_server.client()

    data = zip_of(three_classes(per_class=24))
    body = create(alice_client, data)
    for start in range(0, len(data), CHUNK):
        response = put(alice_client, body["id"], data, start, min(start + CHUNK, len(data)))
        assert response.status_code == 200, response.content
    assert response.json()["status"] == "checking"
    zip_key = f"school/datasets/{body['id']}/upload.zip"
    assert s3.get_object(Bucket=bucket, Key=zip_key)["Body"].read() == data
    assert [p for p in data_dir.rglob("*") if p.is_file()] == []  # the web's staging copy is gone

    checker = worker_on_another_host(tmp_path / "checker", s3_server, bucket, "default")
    try:
        wait_for(
            lambda: Dataset.objects.get(pk=body["id"]).status != Dataset.Status.CHECKING,
            timeout=300,
            what=f"the check\n{checker.log_text()[-3000:]}",
        )
    finally:
        checker.stop()
    dataset = Dataset.objects.get(pk=body["id"])
    assert dataset.status == Dataset.Status.READY, dataset.problems
    assert dataset.class_names == ["blue", "green", "red"]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="school/datasets/")["Contents"]}
    assert keys == {
        zip_key,
        f"school/datasets/{dataset.pk}/cache.pt",
        f"school/datasets/{dataset.pk}/samples.png",
    }
    assert files_under(tmp_path / "checker" / "data") == {"uploads"}  # it fetched the zip and kept nothing

    spec = spec_for(dataset.spec_name)
    design = alice_client.post(
        "/api/v1/designs/", {"name": "Colour net", "spec": spec}, content_type="application/json"
    )
    assert design.status_code == 201, design.content
    trainer = worker_on_another_host(tmp_path / "trainer", s3_server, bucket, "training")
    try:
        response = alice_client.post(
            "/api/v1/runs/",
            {"design_version": design.json()["latest_version"]["id"]},
            content_type="application/json",
        )
        assert response.status_code == 201, response.content
        run_id = response.json()["id"]
        wait_for(
            lambda: Run.objects.get(pk=run_id).is_finished(),
            timeout=600,
            what=f"the run\n{trainer.log_text()[-3000:]}",
        )
    finally:
        trainer.stop()
    run = Run.objects.get(pk=run_id)
    assert run.status == Run.Status.SUCCEEDED, (run.cause, run.error, run.traceback)
    assert run.dataset_hash == dataset.content_hash
    assert run.metrics["class_names"] == ["blue", "green", "red"]
    # The trainer keeps the tensor cache it fetched and what it derives from it (its split), for the next
    # run; nothing else (no zip, no samples).
    kept = {p.name for p in (tmp_path / "trainer" / "data" / "uploads").rglob("*") if p.is_file()}
    assert "cache.pt" in kept and all(name.startswith(("cache.", ".cache.")) for name in kept), kept

    # The web serves the export and the samples from the bucket; its disk stays empty.
    export = alice_client.get(f"/api/v1/datasets/{dataset.pk}/export/")
    assert export.status_code == 200
    assert b"".join(export.streaming_content) == data
    samples = alice_client.get(f"/api/v1/datasets/{dataset.pk}/samples/")
    assert samples.status_code == 200 and samples.content.startswith(b"\x89PNG")
    assert [p for p in data_dir.rglob("*") if p.is_file()] == []

    # Deleting the run and then the dataset takes its files out of the bucket.
    assert alice_client.delete(f"/api/v1/runs/{run.pk}/").status_code == 204
    assert alice_client.delete(f"/api/v1/datasets/{dataset.pk}/").status_code == 204
    assert s3.list_objects_v2(Bucket=bucket, Prefix="school/datasets/").get("KeyCount") == 0
