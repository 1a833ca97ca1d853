"""Run files in an S3-compatible bucket (moto's server mode, a real HTTP server speaking S3, started once
for the session): written in parts from a stream, versioned, private, and served only after the same
access checks as files on the disk (issue 18)."""

from __future__ import annotations

import io
import urllib.request
import uuid

import pytest
from django.core.management import call_command

from training.models import Run, RunArtifact
from training.services.artifacts import artifact_store, object_key
from training.tests.conftest import make_design
from training.tests.ops_support import S3Server, files_under, use_bucket


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture
def bucket(s3_server, settings, monkeypatch, tmp_path):
    name = f"buildx-{uuid.uuid4().hex[:12]}"
    settings.MEDIA_ROOT = tmp_path / "media"  # stays empty: nothing is written to the disk
    use_bucket(settings, monkeypatch, s3_server, bucket=name, prefix="runs-test")
    call_command("storage_setup", stdout=io.StringIO())
    return name


def stored_run(owner) -> Run:
    version, artifact = make_design(owner, epochs=1)
    return Run.objects.create(
        owner=owner,
        design_version=version,
        code_artifact=artifact,
        dataset="digits",
        epochs=1,
        status=Run.Status.SUCCEEDED,
    )


def test_storage_setup_makes_the_bucket_versioned_and_never_public(s3_server, bucket):
    client = s3_server.client()
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    block = client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())


def test_a_run_file_goes_to_the_bucket_in_parts_and_streams_back_to_its_owner_only(
    s3_server, bucket, settings, alice, bob, client, django_capture_on_commit_callbacks
):
    run = stored_run(alice)
    content = bytes(range(256)) * (9 * 4096 + 17)  # over 8 MiB: boto3 uploads it in parts
    stored = artifact_store(
        run=run, kind=RunArtifact.Kind.MODEL, filename="model.safetensors", content=content
    )
    s3 = s3_server.client()
    key = object_key(stored.file.storage, stored.file.name)
    assert key.startswith(f"runs-test/runs/{run.pk}/")
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(content) == stored.size
    assert "-" in head["ETag"], "a multipart upload's ETag"
    assert files_under(settings.MEDIA_ROOT) == []

    url = f"/api/v1/runs/{run.pk}/artifacts/model/"
    client.force_login(alice)
    response = client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == content
    assert response["Content-Length"] == str(len(content))
    assert "attachment" in response["Content-Disposition"]

    # Another user: the same 404 as for a run that does not exist; the disk's URL space serves nothing.
    client.force_login(bob)
    assert client.get(url).status_code == 404
    assert client.get(f"/media/{stored.file.name}").status_code == 404
    assert client.get(f"/runs/{run.pk}/").status_code == 404

    # Signed URLs, when asked for: only after the check, and short-lived.
    settings.STORAGE_DOWNLOADS = "redirect"
    assert client.get(url).status_code == 404
    client.force_login(alice)
    redirect = client.get(url)
    assert redirect.status_code == 302
    signed = redirect["Location"]
    assert (
        signed.startswith(s3_server.endpoint)
        and "X-Amz-Signature=" in signed
        and "X-Amz-Expires=60" in signed
    )
    with urllib.request.urlopen(signed, timeout=30) as fetched:
        assert fetched.read() == content

    # Replaced: the row points at the new file, and the old one stays in the bucket as an older version.
    with django_capture_on_commit_callbacks(execute=True):
        replaced = artifact_store(
            run=run, kind=RunArtifact.Kind.MODEL, filename="model.safetensors", content=b"second weights"
        )
    new_key = object_key(replaced.file.storage, replaced.file.name)
    assert new_key != key
    versions = s3.list_object_versions(Bucket=bucket, Prefix=key)
    assert [m["IsLatest"] for m in versions.get("DeleteMarkers", [])] == [True]
    (old,) = versions["Versions"]
    kept = s3.get_object(Bucket=bucket, Key=key, VersionId=old["VersionId"])["Body"].read()
    assert kept == content


def test_a_versioned_overwrite_keeps_the_old_version(s3_server, bucket):
    s3 = s3_server.client()
    key = "runs-test/runs/1/checkpoint_last/last.safetensors"
    first = s3.put_object(Bucket=bucket, Key=key, Body=b"epoch 1")["VersionId"]
    s3.put_object(Bucket=bucket, Key=key, Body=b"epoch 2")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"epoch 2"
    assert s3.get_object(Bucket=bucket, Key=key, VersionId=first)["Body"].read() == b"epoch 1"
    assert len(s3.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]) == 2
