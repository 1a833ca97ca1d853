"""Datasets people bring: create an upload, receive its chunks, check it in a worker, share, rename, delete.

Files are plain files under ``BUILDX_DATA_DIR/uploads/<id>/``: ``upload.zip`` as it arrives (kept once
ready: it is the export, in the user's own folder layout), ``cache.pt`` (the uint8 tensor cache that
built-in sets use too, so a run reads both the same way) and ``samples.png``. Nothing from the zip is
ever extracted to disk: sandbox/engine/custom.py reads entries in memory, counting bytes.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.db.models import ProtectedError, Sum
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

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


def dataset_check(*, dataset_id: int) -> Dataset | None:
    """Check a fully uploaded zip and decode it to the cache; ready or rejected with the reasons.

    Progress goes to the owner's pages as it happens (``dataset.status``). Any failure of the check
    itself rejects the dataset rather than leaving it "checking" for ever.
    """
    from sandbox.engine import custom  # torch and Pillow: only in the worker

    dataset = Dataset.objects.filter(pk=dataset_id, status=Dataset.Status.CHECKING).first()
    if dataset is None:
        return None
    limits = custom.ZipLimits(
        max_zip_bytes=settings.DATASET_MAX_UPLOAD_BYTES, max_entries=settings.DATASET_MAX_IMAGES
    )
    last: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        last.update(stage=stage, done=done, total=total)
        Dataset.objects.filter(pk=dataset_id).update(progress=dict(last))
        dataset.progress = dict(last)
        publish(user_group(dataset.owner_id), status_message(dataset))

    try:
        report = custom.check_zip(upload_path(dataset), limits=limits, progress=progress)
        if not report.ok:
            return _reject(dataset, report.as_dict())
        result = custom.extract_to_cache(
            upload_path(dataset),
            cache_path=cache_path(dataset),
            limits=limits,
            side=dataset.image_side,
            report=report,
            progress=progress,
        )
        from sandbox.engine.buildx_runtime import load_cache

        cache = load_cache(result.cache_path)
        custom.write_samples(
            cache["images"], cache["labels"], classes=len(result.class_names), path=samples_path(dataset)
        )
    except Exception as exc:  # noqa: BLE001 - whatever broke, the dataset ends rejected, with the reason
        logger.exception("The check of dataset %s failed", dataset_id)
        return _reject(
            dataset,
            {
                "problems": [
                    {
                        "entry": "",
                        "code": "check_failed",
                        "message": f"The check failed ({type(exc).__name__}).",
                        "params": {},
                    }
                ],
                "more_problems": 0,
                "warnings": [],
            },
        )
    Dataset.objects.filter(pk=dataset_id, status=Dataset.Status.CHECKING).update(
        status=Dataset.Status.READY,
        input_shape=list(result.input_shape),
        class_names=list(result.class_names),
        counts=dict(result.counts),
        split={
            "train": result.train,
            "test": result.test,
            "own": result.own_split,
            "moved_duplicates": result.moved_duplicates,
        },
        mean=list(result.mean),
        std=list(result.std),
        content_hash=result.content_hash,
        cache_bytes=result.cache_path.stat().st_size,
        warnings=[_problem_dict(w) for w in result.warnings],
        problems=[],
        progress={"stage": "ready", "done": len(report.images), "total": len(report.images)},
        checked_at=timezone.now(),
    )
    dataset.refresh_from_db()
    publish(user_group(dataset.owner_id), status_message(dataset))
    return dataset


def _problem_dict(p: Any) -> dict[str, Any]:
    return {"entry": p.entry, "code": p.code, "message": p.message, "params": p.params}


def _reject(dataset: Dataset, answer: dict[str, Any]) -> Dataset:
    Dataset.objects.filter(pk=dataset.pk).update(
        status=Dataset.Status.REJECTED,
        problems=answer["problems"],
        more_problems=answer.get("more_problems", 0),
        warnings=answer.get("warnings", []),
        checked_at=timezone.now(),
    )
    # Nothing of a rejected upload is kept but the answer: the zip may be hostile.
    for path in (upload_path(dataset), cache_path(dataset), samples_path(dataset)):
        path.unlink(missing_ok=True)
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
    if dataset is None or not cache_path(dataset).is_file():
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
