"""Datasets people bring: create an upload, receive its chunks, check it in a worker, share, rename, delete.

Files are plain files under ``BUILDX_DATA_DIR/uploads/<id>/``: ``upload.zip`` as it arrives (kept once
ready: it is the export, in the user's own folder layout), ``cache.pt`` (the uint8 tensor cache that
built-in sets use too, so a run reads both the same way) and ``samples.png``. Nothing from the zip is
ever extracted to disk: sandbox/engine/custom.py reads entries in memory, counting bytes, and it does so in a
box of its own (sandbox/upload_check.py), never in this process.

With object storage (STORAGE_URL), the bucket holds them (``datasets/<id>/<file>``, through Django's storage
API) and those local paths are working copies: the web writes the arriving zip there and moves it to the
bucket once whole; the checking worker fetches it, stores the cache and the samples, and keeps nothing; a
trainer (or a web process predicting) fetches the cache once and keeps it (``dataset_cache``). No two
machines share a disk.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import ProtectedError, Sum
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from accounts.models import Course, Membership, User
from buildx.live import publish, user_group
from library.models import Dataset, spec_id
from library.selectors import datasets_usable_by
from sandbox.engine import dataset_facts
from sandbox.engine.dataset_facts import DatasetFacts

logger = logging.getLogger(__name__)

COPY_BLOCK = 64 * 1024
MIN_SIDE, MAX_SIDE = 8, 128  # a side the user may choose for the images


class DatasetRefused(Exception):
    """A request about a dataset the platform will not carry out, with a reason a user can act on."""

    def __init__(
        self, code: str, message: str, *, field: str | None = None, status: int = 400, **extra: Any
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status
        self.extra = extra


# --- Files ----------------------------------------------------------------------------------------


def dataset_folder(dataset: Dataset) -> Path:
    return Path(settings.DATA_DIR) / "uploads" / str(dataset.pk)


def upload_path(dataset: Dataset) -> Path:
    return dataset_folder(dataset) / "upload.zip"


def cache_path(dataset: Dataset) -> Path:
    return dataset_folder(dataset) / "cache.pt"


def samples_path(dataset: Dataset) -> Path:
    return dataset_folder(dataset) / "samples.png"


def stored_name(dataset: Dataset, path: Path) -> str:
    """A dataset file's name in Django's storage (used with object storage only)."""
    return f"datasets/{dataset.pk}/{path.name}"


def file_store(dataset: Dataset, path: Path) -> None:
    """With object storage, move a finished local file into the bucket (streamed, in parts); without, leave it."""
    if not settings.USES_OBJECT_STORAGE:
        return
    name = stored_name(dataset, path)
    with path.open("rb") as f:
        saved = default_storage.save(name, File(f))
    if saved != name:  # a name in use gets another one: each dataset file is written once, so never here
        default_storage.delete(saved)
        raise RuntimeError(f"{name} is already in storage")
    path.unlink()


def file_fetch(dataset: Dataset, path: Path) -> bool:
    """Whether the file is on this machine's disk, streamed from the bucket first where it is only there."""
    if path.is_file():
        return True
    if not settings.USES_OBJECT_STORAGE or not default_storage.exists(stored_name(dataset, path)):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")  # two fetches at once: each its own
    try:
        with default_storage.open(stored_name(dataset, path), "rb") as src, part.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return True


def file_open(dataset: Dataset, path: Path) -> IO[bytes] | None:
    """A dataset file to read where it lives (this disk, else the bucket, streamed), or None."""
    if path.is_file():
        return open(path, "rb")  # noqa: SIM115 - the caller closes it (a FileResponse does)
    if settings.USES_OBJECT_STORAGE and default_storage.exists(stored_name(dataset, path)):
        return default_storage.open(stored_name(dataset, path), "rb")
    return None


def files_remove(dataset: Dataset) -> None:
    """The dataset's files on this disk and, with object storage, in the bucket."""
    for path in (upload_path(dataset), cache_path(dataset), samples_path(dataset)):
        path.unlink(missing_ok=True)
        if settings.USES_OBJECT_STORAGE:
            default_storage.delete(stored_name(dataset, path))


# --- Quotas ---------------------------------------------------------------------------------------


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f}"


def user_storage(owner: User) -> int:
    return int(Dataset.objects.filter(owner=owner).aggregate(s=Sum("size"))["s"] or 0)


def course_storage(course: Course) -> int:
    shared = Dataset.objects.filter(course=course, visibility=Dataset.Visibility.COURSE)
    return int(shared.aggregate(s=Sum("size"))["s"] or 0)


# --- Create and receive ---------------------------------------------------------------------------


def dataset_create(
    *,
    owner: User,
    name: str,
    size: int,
    description: str = "",
    filename: str = "",
    image_side: int | None = None,
) -> Dataset:
    """A dataset waiting for its zip's ``size`` bytes; refused over the size limit or the user's quota."""
    name = (name or "").strip() or (filename.rsplit(".", 1)[0] if filename else "")
    if not name:
        raise DatasetRefused("invalid", _("Give the dataset a name."), field="name")
    if size <= 0:
        raise DatasetRefused("invalid", _("The file is empty."), field="size")
    if size > settings.DATASET_MAX_UPLOAD_BYTES:
        raise DatasetRefused(
            "too_large",
            _("The zip is %(size)s MB; the largest this server takes is %(max)s MB.")
            % {"size": _mb(size), "max": _mb(settings.DATASET_MAX_UPLOAD_BYTES)},
            field="size",
            status=413,
        )
    if image_side is not None and not MIN_SIDE <= image_side <= MAX_SIDE:
        raise DatasetRefused(
            "invalid",
            _("The image side must be between %(min)s and %(max)s pixels.")
            % {"min": MIN_SIDE, "max": MAX_SIDE},
            field="image_side",
        )
    with transaction.atomic():
        # One user's uploads are created one at a time, so two at once cannot both fit the quota.
        User.objects.select_for_update().filter(pk=owner.pk).first()
        used = user_storage(owner)
        if used + size > settings.DATASET_USER_QUOTA_BYTES:
            raise DatasetRefused(
                "quota_storage",
                _(
                    "Your datasets take %(used)s MB of your %(max)s MB; this one needs %(size)s MB more. "
                    "Delete a dataset you no longer need, then upload again."
                )
                % {
                    "used": _mb(used),
                    "max": _mb(settings.DATASET_USER_QUOTA_BYTES),
                    "size": _mb(size),
                },
                field="size",
                status=413,
            )
        dataset = Dataset.objects.create(
            owner=owner,
            name=name[:120],
            description=description,
            size=size,
            filename=filename[:255],
            image_side=image_side,
        )
    folder = dataset_folder(dataset)
    folder.mkdir(parents=True, exist_ok=True)
    upload_path(dataset).touch()
    return dataset


def dataset_receive(*, dataset: Dataset, offset: int, length: int, stream: IO[bytes]) -> Dataset:
    """Write one chunk at ``offset`` (it must be where the upload stands: ``received``).

    A chunk sent again after a lost answer, or from the wrong place, is refused with 409 and the
    offset to resume from; the browser asks and goes on from there. The last chunk starts the check.
    """
    if length > settings.DATASET_CHUNK_BYTES:
        raise DatasetRefused(
            "chunk_too_large",
            _("A chunk may hold at most %(max)s MB.") % {"max": _mb(settings.DATASET_CHUNK_BYTES)},
            status=413,
        )
    with transaction.atomic():
        row = Dataset.objects.select_for_update().get(pk=dataset.pk)
        if row.status != Dataset.Status.UPLOADING:
            raise DatasetRefused(
                "not_uploading",
                _("This dataset is not waiting for an upload."),
                status=409,
                received=row.received,
            )
        if offset != row.received:
            raise DatasetRefused(
                "offset_mismatch",
                _("The upload stands at byte %(n)s: send from there.") % {"n": row.received},
                status=409,
                received=row.received,
            )
        if length <= 0 or offset + length > row.size:
            raise DatasetRefused(
                "invalid",
                _("This chunk goes past the size the upload declared (%(size)s bytes).") % {"size": row.size},
            )
        written = 0
        with open(upload_path(row), "r+b") as out:
            out.seek(offset)
            out.truncate()  # a chunk that failed half-way left bytes past `received`
            while written < length:
                block = stream.read(min(COPY_BLOCK, length - written))
                if not block:
                    break
                out.write(block)
                written += len(block)
        if written != length:
            raise DatasetRefused(
                "incomplete_chunk",
                _("The chunk arrived incomplete; send it again."),
                status=409,
                received=row.received,
            )
        row.received = offset + length
        row.save(update_fields=["received", "updated_at"])
        if row.received == row.size:
            _start_check(row)
    return row


def dataset_upload_whole(*, owner: User, name: str, file: IO[bytes], size: int, **fields: Any) -> Dataset:
    """A whole zip in one request (an API client's multipart upload): create, write, check."""
    dataset = dataset_create(owner=owner, name=name, size=size, **fields)
    with open(upload_path(dataset), "wb") as out:
        shutil.copyfileobj(file, out, COPY_BLOCK)
    if upload_path(dataset).stat().st_size != size:
        raise DatasetRefused("incomplete_chunk", _("The file arrived incomplete; send it again."))
    Dataset.objects.filter(pk=dataset.pk).update(received=size)
    dataset.received = size
    _start_check(dataset)
    return dataset


def _start_check(dataset: Dataset) -> None:
    file_store(dataset, upload_path(dataset))  # the worker that checks it may be on another host
    if Dataset.objects.filter(pk=dataset.pk, status=Dataset.Status.UPLOADING).update(
        status=Dataset.Status.CHECKING, progress={"stage": "queued", "done": 0, "total": 0}
    ):
        dataset.status = Dataset.Status.CHECKING
        transaction.on_commit(lambda: _enqueue_check(dataset.pk))


def _enqueue_check(dataset_id: int) -> None:
    from library.actors import check_dataset  # the actor module imports this one

    check_dataset.send(dataset_id)


# --- The check (in a worker) -----------------------------------------------------------------------


def status_message(dataset: Dataset) -> dict[str, Any]:
    """``dataset.status`` over the owner's WebSocket group, and the API's view of the check."""
    return {
        "type": "dataset.status",
        "dataset": dataset.pk,
        "status": dataset.status,
        "progress": dataset.progress,
        "received": dataset.received,
        "size": dataset.size,
        "problems": dataset.problems,
        "more_problems": dataset.more_problems,
        "warnings": dataset.warnings,
    }


def dataset_check(*, dataset_id: int, entry: list[str] | None = None, code: str = "") -> Dataset | None:
    """Check a fully uploaded zip in a box of its own and decode it to the cache; ready or rejected with
    the reasons.

    The zip is inflated and its images decoded in the box (sandbox/upload_check.py), never here: this
    process only reads the box's checked tensors and writes the cache, the samples, the mean and std and
    the content hash from them. Progress goes to the owner's pages as it happens (``dataset.status``).
    Any failure of the check itself rejects the dataset rather than leaving it "checking" for ever.
    ``entry`` and ``code``: another program in the box (tests: an attacker who took the check over).
    """
    # torch and Pillow: only in the worker
    from sandbox import upload_check
    from sandbox.engine import custom
    from sandbox.engine.datasets import write_cache

    dataset = Dataset.objects.filter(pk=dataset_id, status=Dataset.Status.CHECKING).first()
    if dataset is None:
        return None
    last: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        last.update(stage=stage, done=done, total=total)
        Dataset.objects.filter(pk=dataset_id).update(progress=dict(last))
        dataset.progress = dict(last)
        publish(user_group(dataset.owner_id), status_message(dataset))

    limits = zip_limits()
    try:
        file_fetch(dataset, upload_path(dataset))
        check = upload_check.check_upload(
            zip_path=upload_path(dataset),
            work_path=dataset_folder(dataset) / "check.safetensors",
            zip_limits=limits,
            side=dataset.image_side,
            max_side=DEFAULT_MAX_SIDE,
            on_progress=progress,
            wall_limit_s=settings.DATASET_CHECK_WALL_S,
            memory_bytes=settings.DATASET_CHECK_MEMORY_BYTES,
            entry=entry,
            code=code,
        )
        log_check_end(dataset_id, check)
        if not check.ok or check.decoded is None:
            problems = [with_limit(p, limits) for p in check.problems]
            return _reject(dataset, problems=problems, more_problems=check.more_problems)
        decoded = check.decoded
        write_cache(cache_path(dataset), decoded, name="custom")
        mean, std = custom.channel_stats(decoded["images"], decoded["train_idx"])
        classes = len(decoded["class_names"])
        custom.write_samples(
            decoded["images"], decoded["labels"], classes=classes, path=samples_path(dataset)
        )
        counts = decoded["labels"].bincount(minlength=classes).tolist()
        content = custom.content_hash(decoded)
        cache_bytes = cache_path(dataset).stat().st_size
        file_store(dataset, cache_path(dataset))
        file_store(dataset, samples_path(dataset))
        if settings.USES_OBJECT_STORAGE:
            # The bucket keeps the zip (the export), the cache and the samples.
            shutil.rmtree(dataset_folder(dataset))
    except Exception as exc:  # noqa: BLE001 - whatever broke, the dataset ends rejected, with the reason
        logger.exception("The check of dataset %s failed", dataset_id)
        problem = {"entry": "", "code": "check_failed", "params": {"error": type(exc).__name__}}
        return _reject(dataset, problems=[problem], more_problems=0)
    images = len(decoded["labels"])
    Dataset.objects.filter(pk=dataset_id, status=Dataset.Status.CHECKING).update(
        status=Dataset.Status.READY,
        input_shape=list(decoded["images"].shape[1:]),
        class_names=list(decoded["class_names"]),
        counts=dict(zip(decoded["class_names"], counts, strict=True)),
        split={
            "train": len(decoded["train_idx"]),
            "test": len(decoded["test_idx"]),
            "own": check.own_split,
            "moved_duplicates": check.moved_duplicates,
        },
        mean=list(mean),
        std=list(std),
        content_hash=content,
        cache_bytes=cache_bytes,
        warnings=[with_message(w) for w in check.warnings],
        problems=[],
        progress={"stage": "ready", "done": images, "total": images},
        checked_at=timezone.now(),
    )
    dataset.refresh_from_db()
    publish(user_group(dataset.owner_id), status_message(dataset))
    return dataset


def log_check_end(dataset_id: int, check: Any) -> None:
    """A check's box that failed or refused, in the worker's log with the cause (a zip's or a text's check:
    anything with `sandbox`, `ok` and `problems`); the user sees only the problem's message."""
    if check.sandbox is not None and (check.sandbox.status != "succeeded" or not check.ok):
        logger.warning(
            "The check of dataset %s ended %s, %s: %s",
            dataset_id,
            check.sandbox.status,
            [p["code"] for p in check.problems[:3]],
            check.sandbox.cause,
        )


DEFAULT_MAX_SIDE = 64  # the images' side when the user does not choose one: the most common size, up to this


def zip_limits() -> Any:
    """The check's limits, from the settings (a custom.ZipLimits)."""
    from sandbox.engine import custom  # torch: only in the worker

    return custom.ZipLimits(
        max_zip_bytes=settings.DATASET_MAX_UPLOAD_BYTES, max_entries=settings.DATASET_MAX_IMAGES
    )


# What the check answers, by code. The messages are written here from the code and the server's own
# limits (nothing the box wrote is shown but entry names), stored in English, shown in the reader's
# language (problem_text).
ANSWER_TEXT = {
    "zip_too_big": gettext_lazy("The zip is larger than %(limit_mb)s MB."),
    "not_a_zip": gettext_lazy("This file is not a zip archive."),
    "too_many_entries": gettext_lazy("The zip has more than %(limit)s entries."),
    "link": gettext_lazy("Links are not allowed in the zip."),
    "absolute_path": gettext_lazy("Absolute paths are not allowed in the zip."),
    "path_escape": gettext_lazy("Paths that leave the zip's folder are not allowed."),
    "encrypted": gettext_lazy("Encrypted entries cannot be read."),
    "duplicate": gettext_lazy("This name appears twice in the zip."),
    "not_in_class_folder": gettext_lazy("Images must sit inside a folder named after their class."),
    "bomb": gettext_lazy("This entry decompresses to far more than its size: a zip bomb?"),
    "corrupt": gettext_lazy("This entry cannot be read."),
    "not_an_image": gettext_lazy("Only PNG and JPEG images are allowed."),
    "too_many_pixels": gettext_lazy("This image is larger than %(limit)s pixels."),
    "corrupt_image": gettext_lazy("This image cannot be decoded (it may be cut short or damaged)."),
    "too_many_classes": gettext_lazy("The zip has more than %(limit)s class folders."),
    "too_few_classes": gettext_lazy(
        "A dataset needs at least two class folders, each with at least one image."
    ),
    "overlap": gettext_lazy("Entries of this zip share their data: a zip bomb?"),
    "split_classes_differ": gettext_lazy(
        "train/ and test/ must hold the same class folders; only one has: %(classes)s."
    ),
    "check_out_of_memory": gettext_lazy(
        "Checking this zip needed more than %(mb)s MB of memory, so it was stopped. Send fewer or smaller images."
    ),
    "check_timeout": gettext_lazy(
        "Checking this zip took longer than %(seconds)s seconds, so it was stopped."
    ),
    "check_failed": gettext_lazy("The check of this zip failed. Try again, or send the images in a new zip."),
    "check_forged": gettext_lazy(
        "The check of this zip gave an answer that does not hold together, so the zip was refused."
    ),
    "few_images": gettext_lazy("Class %(class)s has %(count)s images: add more (at least %(min)s)."),
    "imbalance": gettext_lazy("The largest class has %(ratio)s times the images of the smallest."),
    "duplicates_across_splits": gettext_lazy(
        "%(count)s test images are also in train/: the test accuracy will look better than it is."
    ),
}


def problem_text(answer: dict[str, Any]) -> str:
    """One problem's or warning's message in the active language, from its code and parameters (the web
    process calls it too: no torch here; a limit is in the parameters, put there by the worker)."""
    values: dict[str, Any] = {
        "limit_mb": settings.DATASET_MAX_UPLOAD_BYTES // 2**20,
        "mb": settings.DATASET_CHECK_MEMORY_BYTES // 2**20,
        "seconds": settings.DATASET_CHECK_WALL_S,
        "class": "", "count": "", "min": "", "ratio": "", "classes": "", "limit": "",
    }  # fmt: skip
    params = answer.get("params")
    if isinstance(params, dict):
        values.update({k: v for k, v in params.items() if isinstance(k, str)})
    if isinstance(values["classes"], list):
        values["classes"] = ", ".join(str(c) for c in values["classes"])
    template = ANSWER_TEXT.get(str(answer.get("code")), ANSWER_TEXT["check_failed"])
    try:
        return str(template) % values
    except (KeyError, TypeError, ValueError):
        return str(ANSWER_TEXT["check_failed"])


def with_limit(answer: dict[str, Any], limits: Any) -> dict[str, Any]:
    """The server's own limit in a problem's parameters, for the problems whose message names one."""
    limit = {
        "too_many_entries": limits.max_entries,
        "too_many_pixels": limits.max_image_pixels,
        "too_many_classes": limits.max_classes,
    }.get(answer["code"])
    return answer if limit is None else {**answer, "params": {**answer["params"], "limit": limit}}


def with_message(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer as stored: with its message in English (pages show problem_text, in the reader's language)."""
    with translation.override("en"):
        return {**answer, "message": problem_text(answer)}


def answers_in_language(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored problems or warnings with their messages in the active language."""
    return [{**a, "message": problem_text(a)} if a.get("code") in ANSWER_TEXT else a for a in answers]


def _reject(dataset: Dataset, *, problems: list[dict[str, Any]], more_problems: int) -> Dataset:
    Dataset.objects.filter(pk=dataset.pk).update(
        status=Dataset.Status.REJECTED,
        problems=[with_message(p) for p in problems],
        more_problems=more_problems,
        warnings=[],
        checked_at=timezone.now(),
    )
    # Nothing of a rejected upload is kept but the answer: the zip may be hostile.
    files_remove(dataset)
    dataset.refresh_from_db()
    publish(user_group(dataset.owner_id), status_message(dataset))
    return dataset


# --- Change, share, delete ------------------------------------------------------------------------


def dataset_rename(*, dataset: Dataset, name: str | None = None, description: str | None = None) -> Dataset:
    if name is not None:
        if not name.strip():
            raise DatasetRefused("invalid", _("Give the dataset a name."), field="name")
        dataset.name = name.strip()[:120]
    if description is not None:
        dataset.description = description
    dataset.save(update_fields=["name", "description", "updated_at"])
    return dataset


def courses_taught_by(user: User) -> list[Course]:
    return list(Course.objects.filter(memberships__user=user, memberships__role=Membership.Role.INSTRUCTOR))


def dataset_share(*, dataset: Dataset, user: User, course: Course | None) -> Dataset:
    """Share a ready dataset with a course its owner teaches (students see it in their picker), or make
    it private again (course None). The course's quota counts what is shared with it."""
    if dataset.owner_id != user.pk:
        raise DatasetRefused("not_found", _("That dataset does not exist."), status=404)
    if course is None:
        dataset.visibility, dataset.course = Dataset.Visibility.PRIVATE, None
        dataset.save(update_fields=["visibility", "course", "updated_at"])
        return dataset
    if not Membership.objects.filter(course=course, user=user, role=Membership.Role.INSTRUCTOR).exists():
        raise DatasetRefused(
            "not_instructor", _("Only an instructor of a course can share a dataset with it."), field="course"
        )
    if not dataset.is_ready:
        raise DatasetRefused("not_ready", _("Only a checked dataset can be shared."), field="course")
    used = course_storage(course) - (dataset.size if dataset.course_id == course.pk else 0)
    if used + dataset.size > settings.DATASET_COURSE_QUOTA_BYTES:
        raise DatasetRefused(
            "quota_course",
            _(
                "Datasets shared with %(course)s take %(used)s MB of its %(max)s MB; this one needs %(size)s MB."
            )
            % {
                "course": course.name,
                "used": _mb(used),
                "max": _mb(settings.DATASET_COURSE_QUOTA_BYTES),
                "size": _mb(dataset.size),
            },
            field="course",
            status=413,
        )
    dataset.visibility, dataset.course = Dataset.Visibility.COURSE, course
    dataset.save(update_fields=["visibility", "course", "updated_at"])
    return dataset


def dataset_delete(*, dataset: Dataset) -> None:
    """Delete a dataset and its files; refused while runs that trained on it exist (they need its test
    split for their results, predictions and bundles)."""
    folder = dataset_folder(dataset)
    files = Dataset(pk=dataset.pk)  # names its files once the row (and so dataset.pk) is gone
    try:
        dataset.delete()
    except ProtectedError as exc:
        n = len(exc.protected_objects)
        raise DatasetRefused(
            "in_use",
            ngettext(
                "%(n)d run trained on this dataset: delete it first.",
                "%(n)d runs trained on this dataset: delete them first.",
                n,
            )
            % {"n": n},
            status=409,
        ) from exc
    shutil.rmtree(folder, ignore_errors=True)
    files_remove(files)


# --- What designs and runs read ---------------------------------------------------------------------


def facts_of(dataset: Dataset) -> DatasetFacts:
    """The dataset as a design sees it: the same facts a built-in set has."""
    c = int(dataset.input_shape[0]) if dataset.input_shape else 1
    return DatasetFacts(
        name=dataset.spec_name,
        title=dataset.name,
        input_shape=tuple(int(x) for x in dataset.input_shape),  # type: ignore[arg-type]
        class_names=tuple(str(c) for c in dataset.class_names),
        mean=tuple(float(x) for x in dataset.mean) or (0.5,) * c,
        std=tuple(float(x) for x in dataset.std) or (0.5,) * c,
        help_en=dataset.description or dataset.name,
        help_ko=dataset.description or dataset.name,
        mirror_keeps_class=True,
    )


def dataset_by_spec_name(name: object) -> Dataset | None:
    """The ready uploaded dataset a spec names (``upload-<id>``), whoever owns it; None for any other name.

    Who may use it is decided at the doors (``usable_by``): validation only needs its facts."""
    pk = spec_id(name)
    if pk is None:
        return None
    return Dataset.objects.filter(pk=pk, status=Dataset.Status.READY).first()


def lookup_facts(name: object) -> DatasetFacts | None:
    """Facts of a built-in set or of a ready uploaded one, by the name a spec uses."""
    found = dataset_facts.lookup(name)
    if found is not None:
        return found
    dataset = dataset_by_spec_name(name)
    # A text dataset is a language model's corpus (library/text_datasets.py), not an image set.
    return facts_of(dataset) if dataset is not None and not dataset.is_text else None


def usable_by(user: User | None, name: object) -> bool:
    """Whether ``user`` may design with and train on the dataset a spec names (built-in sets: anyone)."""
    pk = spec_id(name)
    if pk is None:
        return True
    if user is None or not user.is_authenticated:
        return False
    return datasets_usable_by(user).filter(pk=pk).exists()


# --- Built-in sets: there, or the operator's command --------------------------------------------------


@dataclass(frozen=True)
class Availability:
    available: bool
    fix: str = ""
    missing: tuple[str, ...] = ()


def builtin_availability(name: str) -> Availability:
    """Whether a built-in set's files are on this server, and the operator's command if not."""
    from sandbox.engine import datasets as engine_datasets  # torch: where a run is created, not at start-up

    a = engine_datasets.availability(name, data_dir=settings.DATA_DIR)
    return Availability(a.available, a.fix, a.missing)


def builtin_catalog() -> list[dict[str, Any]]:
    from sandbox.engine import datasets as engine_datasets

    return engine_datasets.catalog(data_dir=settings.DATA_DIR)


def not_installed_message(name: str, fix: str) -> str:
    return _("%(name)s is not installed on this server. An operator installs it with: %(fix)s") % {
        "name": name,
        "fix": fix,
    }


def dataset_cache(name: str) -> Path:
    """The whole tensor cache of the dataset a spec names: an uploaded one's file, or a built-in set's
    (decoded from its source first if needed). FileNotFoundError when it is not there."""
    pk = spec_id(name)
    if pk is None:
        from sandbox.engine import datasets as engine_datasets  # torch: only where a cache is read

        return engine_datasets.ensure_cache(name, data_dir=settings.DATA_DIR)
    dataset = Dataset.objects.filter(pk=pk, status=Dataset.Status.READY).first()
    if dataset is None or not file_fetch(dataset, cache_path(dataset)):
        raise FileNotFoundError(f"the uploaded dataset {name} is not ready")
    return cache_path(dataset)


def cache_hash(path: Path) -> str:
    """SHA-256 of a cache file, remembered beside it (keyed by its size and time) so it is read once."""
    import hashlib

    info = path.stat()
    memo = path.with_name(f".{path.name}.{info.st_size:x}-{int(info.st_mtime_ns):x}.sha256")
    if memo.is_file():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    memo.write_text(digest.hexdigest())
    return digest.hexdigest()
