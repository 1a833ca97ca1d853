"""Run files in storage: checkpoints and models, their size limits, what a user has stored, and the
dataset caches a box mounts."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import Storage
from django.db import transaction
from django.db.models import Sum
from django.http import FileResponse, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.http import content_disposition_header

from library import services as library_services
from library import text_datasets
from sandbox.files import ReadableFile
from training.models import Run, RunArtifact

logger = logging.getLogger(__name__)

CHECKPOINT_META_MAX_BYTES = 1 << 20  # a checkpoint's JSON: the epoch, metrics, optimizer's plain state
FILE_MARGIN_BYTES = 16 << 20  # safetensors headers and buffers (batch norm statistics) beyond the params


def checkpoint_max_bytes(params: int | None) -> int:
    """The largest checkpoint a model of `params` parameters can honestly write: its weights and up to
    three optimizer slots per parameter (Adam keeps two), in float64 at most, plus a margin. A child
    that writes more is not saving that model."""
    return 8 * 4 * int(params or settings.RUNS_MAX_PARAMS) + FILE_MARGIN_BYTES


def model_max_bytes(params: int | None) -> int:
    """The largest weights-only file for `params` parameters (float64 at most)."""
    return 8 * int(params or settings.RUNS_MAX_PARAMS) + FILE_MARGIN_BYTES


def storage_used(owner_id: int) -> int:
    """Bytes of run files the user has in storage."""
    return RunArtifact.objects.filter(run__owner_id=owner_id).aggregate(s=Sum("size"))["s"] or 0


@dataclass
class Written:
    """A file put in storage that no row points at yet (artifact_record gives it one)."""

    name: str
    filename: str
    size: int

    def discard(self) -> None:
        RunArtifact.file.field.storage.delete(self.name)


def artifact_write(*, run: Run, kind: str, filename: str, source: ReadableFile | bytes) -> Written:
    """Put a run's file in Django's storage under a new name, streamed (never whole in memory).

    Outside any transaction: the copy of a large checkpoint must not hold the run's row lock."""
    field_ = RunArtifact.file.field
    # django-stubs asks File for an IO; Django's File reads and seeks any file object, a RawIOBase too.
    content = ContentFile(source) if isinstance(source, bytes) else File(source)  # type: ignore[arg-type]
    name = field_.storage.save(field_.generate_filename(RunArtifact(run=run), f"{kind}/{filename}"), content)
    return Written(name=name, filename=filename, size=field_.storage.size(name))


def artifact_record(*, run: Run, kind: str, written: Written, epoch: int | None = None) -> RunArtifact:
    """Point the run's artifact of `kind` at a written file; the file it replaces goes once committed
    (a rolled-back transaction leaves the previous file in place)."""
    artifact = RunArtifact.objects.filter(run=run, kind=kind).first()
    old = artifact.file.name if artifact is not None and artifact.file else None
    if artifact is None:
        artifact = RunArtifact(run=run, kind=kind)
    artifact.file.name = written.name
    artifact.filename = written.filename
    artifact.size = written.size
    artifact.epoch = epoch
    artifact.save()
    if old and old != written.name:
        storage = artifact.file.storage
        transaction.on_commit(lambda: storage.delete(old))
    return artifact


def artifact_store(
    *, run: Run, kind: str, filename: str, content: bytes | ReadableFile, epoch: int | None = None
) -> RunArtifact:
    """Write and record a run's file at once (small files, or outside any transaction)."""
    written = artifact_write(run=run, kind=kind, filename=filename, source=content)
    try:
        with transaction.atomic():
            return artifact_record(run=run, kind=kind, written=written, epoch=epoch)
    except BaseException:
        written.discard()
        raise


def is_object_storage(storage: Storage) -> bool:
    """Whether files live in an S3-compatible bucket (django-storages' S3Storage) rather than on a disk."""
    return hasattr(storage, "bucket_name")


def object_key(storage: Storage, name: str) -> str:
    """The bucket key of a stored file: the storage's prefix (AWS_LOCATION) and its name."""
    from storages.utils import clean_name, safe_join

    return safe_join(getattr(storage, "location", ""), clean_name(name))


def artifact_response(artifact: RunArtifact, *, download_name: str) -> HttpResponseBase:
    """A run file for a viewer the caller has already checked: streamed from the storage in chunks
    (never whole in memory, from a bucket too), or, with STORAGE_DOWNLOADS=redirect and a bucket, a
    redirect to a signed URL that expires in AWS_QUERYSTRING_EXPIRE seconds. The bucket is never public."""
    storage: Any = artifact.file.storage  # S3Storage's url() and connection are not Storage's
    name = str(artifact.file.name)
    disposition = content_disposition_header(True, download_name) or "attachment"
    if not is_object_storage(storage):
        return FileResponse(artifact.file.open("rb"), as_attachment=True, filename=download_name)
    if settings.STORAGE_DOWNLOADS == "redirect":
        url = storage.url(
            name,
            parameters={"ResponseContentDisposition": disposition},
            expire=settings.AWS_QUERYSTRING_EXPIRE,
        )
        return HttpResponseRedirect(url)
    answer = storage.connection.meta.client.get_object(
        Bucket=storage.bucket_name, Key=object_key(storage, name)
    )
    response = StreamingHttpResponse(
        answer["Body"].iter_chunks(1 << 20), content_type="application/octet-stream"
    )
    response["Content-Length"] = str(answer["ContentLength"])
    response["Content-Disposition"] = disposition
    return response


def artifacts_remove(*, names: list[str], run_ids: list[int]) -> None:
    """Delete run files from storage (after their rows are gone), and the runs' now empty folders on a
    local disk. A file that cannot be deleted is logged: the rows are gone either way."""
    storage = RunArtifact.file.field.storage
    for name in names:
        try:
            storage.delete(name)
        except Exception:
            logger.exception("Could not delete the run file %s from storage", name)
    try:
        root = Path(storage.path(""))
    except NotImplementedError:
        return  # remote storage (S3): there are no folders
    for run_id in run_ids:
        folder = root / "runs" / str(run_id)
        # Deepest first; rmdir refuses a folder that still holds something, which is then kept.
        for path in sorted(folder.glob("**/*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.rmdir()
        with contextlib.suppress(OSError):
            folder.rmdir()


def restore_checkpoints(run: Run, run_dir: Path) -> int | None:
    """Copy the stored checkpoints into a fresh run folder; returns the epoch of ``last``."""
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    epoch = None
    for artifact in run.artifacts.filter(kind__startswith="checkpoint_"):
        with artifact.file.open("rb") as src, open(folder / artifact.filename, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        if artifact.kind == RunArtifact.Kind.CHECKPOINT_LAST_META:
            epoch = int(
                json.loads((folder / artifact.filename).read_bytes())["epoch"]
            )  # what resume starts from
    return epoch


def dataset_caches(name: str) -> tuple[Path, Path]:
    """The dataset's tensor caches, built outside the sandbox: (without the test split, whole).

    A training child gets the first: the test images are only for the platform's evaluation."""
    from sandbox.engine import corpora, datasets  # torch: only the worker that trains loads it

    if corpora.is_text(name):  # a language model's corpus and tokenizer ("addition", "python:bpe512")
        text = corpora.ensure_text_cache(name, cache_dir=Path(settings.DATA_DIR) / "cache")
        return corpora.training_text_cache(text), text
    whole = library_services.dataset_cache(name)  # a built-in set's, or an uploaded one's
    if text_datasets.text_dataset_by_spec_name(name) is not None:  # an uploaded text, tokenised when checked
        return corpora.training_text_cache(whole), whole
    return datasets.training_cache(whole), whole
