"""Prepare the S3-compatible bucket of run files (STORAGE_URL / AWS_*): create it when missing, turn
versioning on (a replaced or deleted checkpoint stays as an older version) and block public access.
Safe to run again; docker-compose.yml's migrate service runs it when a bucket is configured.
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the run files' bucket if needed, with versioning on and no public access."

    def handle(self, *args, **options) -> None:
        if not settings.USES_OBJECT_STORAGE:
            self.stdout.write("Run files are on the local disk (MEDIA_ROOT): nothing to prepare.")
            return
        client = default_storage.connection.meta.client  # type: ignore[attr-defined]
        bucket = settings.AWS_STORAGE_BUCKET_NAME
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            region = settings.AWS_S3_REGION_NAME
            if region and region != "us-east-1":
                client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
            else:
                client.create_bucket(Bucket=bucket)
            self.stdout.write(f"Created bucket {bucket}.")
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        try:
            client.put_public_access_block(
                Bucket=bucket,
                PublicAccessBlockConfiguration={
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                },
            )
        except client.exceptions.ClientError as refused:  # MinIO and some others have no such call
            self.stdout.write(f"Public access block not set ({refused}); the bucket has no public policy.")
        status = client.get_bucket_versioning(Bucket=bucket).get("Status")
        self.stdout.write(
            f"Bucket {bucket}: versioning {status}, prefix {settings.AWS_LOCATION or '(none)'}."
        )
