"""/api/v1/datasets/: what a user may train on, uploads in resumable chunks, the library's changes.

Thin DRF views over ``library.services``. A dataset the user may not see is a 404 everywhere, the same
answer as one that does not exist.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import IO, Any, cast

from django.http import FileResponse, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import signed_in_user
from accounts.models import Course
from buildx.api import error_response
from buildx.schema import ERROR
from library import services, text_datasets
from library.models import Dataset
from library.selectors import datasets_visible_to

CONTENT_RANGE = re.compile(r"^bytes (\d{1,12})-(\d{1,12})/(\d{1,12})$")


def dataset_json(dataset: Dataset, *, user_id: int) -> dict[str, Any]:
    """One uploaded dataset as the API and the editor's picker see it."""
    return {
        "id": dataset.pk,
        "name": dataset.spec_name,
        "title": dataset.name,
        "description": dataset.description,
        "source": "upload",
        "kind": dataset.kind,
        "visibility": dataset.visibility,
        "course": dataset.course_id,
        "mine": dataset.owner_id == user_id,
        "status": dataset.status,
        "available": dataset.is_ready,
        "fix": "",
        "size": dataset.size,
        "received": dataset.received,
        "progress": dataset.progress,
        "input_shape": dataset.input_shape,
        "num_classes": dataset.num_classes,
        "class_names": dataset.class_names,
        "counts": dataset.counts,
        "split": dataset.split,
        "mean": dataset.mean,
        "std": dataset.std,
        "content_hash": dataset.content_hash,
        "problems": services.answers_in_language(dataset.problems),
        "more_problems": dataset.more_problems,
        "warnings": services.answers_in_language(dataset.warnings),
        "text": dataset.text_facts,  # a text dataset's tokenizer, vocabulary, sizes and sample ({} otherwise)
        "created_at": dataset.created_at.isoformat() if dataset.created_at else None,
        "url": f"/datasets/{dataset.pk}/",
        "upload_url": f"/api/v1/datasets/{dataset.pk}/upload/",
    }


def builtin_json(row: dict[str, Any]) -> dict[str, Any]:
    fix = row["fix"]
    return {
        "id": None,
        "name": row["name"],
        "title": row["title"],
        "source": "builtin",
        "kind": Dataset.Kind.IMAGE_CLASSIFICATION,
        "status": Dataset.Status.READY if row["available"] else "not_installed",
        "available": row["available"],
        "fix": fix,
        "message": "" if row["available"] else services.not_installed_message(row["name"], fix),
        "input_shape": row["input_shape"],
        "num_classes": row["num_classes"],
        "class_names": row["class_names"],
    }


def _refused(exc: services.DatasetRefused) -> Response:
    fields = {exc.field: [exc.message]} if exc.field else None
    response = error_response(code=exc.code, message=exc.message, fields=fields, http_status=exc.status)
    if exc.extra:
        response.data["error"].update(exc.extra)
    return response


def _visible(request: Request, pk: int) -> Dataset:
    return get_object_or_404(datasets_visible_to(signed_in_user(request)), pk=pk)


def _own(request: Request, pk: int) -> Dataset:
    return get_object_or_404(Dataset.objects.filter(owner=signed_in_user(request)), pk=pk)


class DatasetCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    filename = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    size = serializers.IntegerField(
        required=False, min_value=1, help_text="The zip's size in bytes; its chunks follow (PUT upload_url)."
    )
    image_side = serializers.IntegerField(required=False, allow_null=True, default=None)
    file = serializers.FileField(required=False, help_text="The whole zip in this request (multipart).")
    kind = serializers.ChoiceField(
        choices=Dataset.Kind.choices, required=False, default=Dataset.Kind.IMAGE_CLASSIFICATION,
        help_text="text: a plain UTF-8 text file for language models, tokenised when it is checked.",
    )  # fmt: skip
    tokenizer = serializers.ChoiceField(choices=text_datasets.TOKENIZERS, required=False, default="char")
    vocab_size = serializers.IntegerField(required=False, allow_null=True, default=None, help_text="bpe only")


class DatasetListCreate(APIView):
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    @extend_schema(
        summary="Datasets this user may train on: built-in sets (with availability) and uploaded ones",
        operation_id="datasets_list",
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        user = signed_in_user(request)
        builtin = [builtin_json(row) for row in services.builtin_catalog()]
        mine = datasets_visible_to(user).order_by("-created_at")
        return Response({"results": builtin + [dataset_json(d, user_id=user.pk) for d in mine]})

    @extend_schema(
        summary="Start an upload (JSON: name and size, then chunks) or upload a whole zip (multipart: file)",
        request=DatasetCreateSerializer,
        responses={201: OpenApiTypes.OBJECT, 400: ERROR, 413: ERROR},
    )
    def post(self, request: Request) -> Response:
        body = DatasetCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        user = signed_in_user(request)
        fields = {"description": data["description"], "image_side": data["image_side"]}
        whole: Callable[..., Dataset] = services.dataset_upload_whole
        create: Callable[..., Dataset] = services.dataset_create
        if data["kind"] == Dataset.Kind.TEXT:  # a text for language models: its tokenizer, not an image side
            whole, create = text_datasets.text_upload_whole, text_datasets.text_dataset_create
            fields = {k: data[k] for k in ("description", "tokenizer", "vocab_size")}
        try:
            if data.get("file") is not None:
                upload = data["file"]
                dataset = whole(
                    owner=user,
                    name=data["name"],
                    file=upload,
                    size=upload.size,
                    filename=upload.name or "",
                    **fields,
                )
            elif data.get("size"):
                dataset = create(
                    owner=user, name=data["name"], size=data["size"], filename=data["filename"], **fields
                )
            else:
                return error_response(
                    code="invalid",
                    message=_("Send the zip's size (then its chunks), or the zip itself as file."),
                    fields={"size": [_("This field is required.")]},
                )
        except services.DatasetRefused as exc:
            return _refused(exc)
        return Response(dataset_json(dataset, user_id=user.pk), status=status.HTTP_201_CREATED)


class DatasetPatchSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=120, required=False)
    description = serializers.CharField(required=False, allow_blank=True)


class DatasetDetail(APIView):
    @extend_schema(summary="One dataset", responses={200: OpenApiTypes.OBJECT, 404: ERROR})
    def get(self, request: Request, pk: int) -> Response:
        return Response(dataset_json(_visible(request, pk), user_id=signed_in_user(request).pk))

    @extend_schema(
        summary="Rename a dataset, or change its description",
        request=DatasetPatchSerializer,
        responses={200: OpenApiTypes.OBJECT, 404: ERROR},
    )
    def patch(self, request: Request, pk: int) -> Response:
        dataset = _own(request, pk)
        body = DatasetPatchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            services.dataset_rename(dataset=dataset, **body.validated_data)
        except services.DatasetRefused as exc:
            return _refused(exc)
        return Response(dataset_json(dataset, user_id=dataset.owner_id))

    @extend_schema(summary="Delete a dataset", responses={204: None, 404: ERROR, 409: ERROR})
    def delete(self, request: Request, pk: int) -> Response:
        try:
            services.dataset_delete(dataset=_own(request, pk))
        except services.DatasetRefused as exc:
            return _refused(exc)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DatasetUpload(APIView):
    """Chunks of a zip, in order: ``PUT`` with ``Content-Range: bytes start-end/total`` and the bytes as the
    body. A chunk from the wrong offset is a 409 with ``received``, the offset to resume from; ``GET`` says
    it too (a page that lost its connection asks, then goes on)."""

    parser_classes: list = []  # the body is read as a stream, never parsed

    @extend_schema(summary="Where an upload stands", responses={200: OpenApiTypes.OBJECT, 404: ERROR})
    def get(self, request: Request, pk: int) -> Response:
        dataset = _own(request, pk)
        return Response(services.status_message(dataset))

    @extend_schema(
        summary="Send one chunk of the zip",
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={200: OpenApiTypes.OBJECT, 404: ERROR, 409: ERROR, 413: ERROR},
    )
    def put(self, request: Request, pk: int) -> Response:
        dataset = _own(request, pk)
        match = CONTENT_RANGE.match(request.headers.get("Content-Range", ""))
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if match is None:
            return error_response(
                code="invalid", message=_("Send a Content-Range header: bytes start-end/total.")
            )
        start, end, total = (int(g) for g in match.groups())
        if end < start or end - start + 1 != length or total != dataset.size:
            return error_response(
                code="invalid",
                message=_("The Content-Range does not match the chunk or the upload's size."),
            )
        try:
            dataset = services.dataset_receive(
                dataset=dataset, offset=start, length=length, stream=cast(IO[bytes], request.stream)
            )
        except services.DatasetRefused as exc:
            return _refused(exc)
        return Response(services.status_message(dataset))


class ShareSerializer(serializers.Serializer):
    course = serializers.IntegerField(allow_null=True, help_text="A course you teach, or null: only you.")


class DatasetShare(APIView):
    @extend_schema(
        summary="Share a dataset with a course you teach (or make it private again)",
        request=ShareSerializer,
        responses={200: OpenApiTypes.OBJECT, 400: ERROR, 404: ERROR},
    )
    def post(self, request: Request, pk: int) -> Response:
        dataset = _own(request, pk)
        body = ShareSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        course = None
        if body.validated_data["course"] is not None:
            course = Course.objects.filter(pk=body.validated_data["course"]).first()
            if course is None:
                return error_response(
                    code="invalid", message=_("No such course."), fields={"course": [_("No such course.")]}
                )
        try:
            services.dataset_share(dataset=dataset, user=signed_in_user(request), course=course)
        except services.DatasetRefused as exc:
            return _refused(exc)
        return Response(dataset_json(dataset, user_id=dataset.owner_id))


class DatasetExport(APIView):
    @extend_schema(
        summary="Download your own dataset: the zip as uploaded, in its folder layout",
        responses={(200, "application/zip"): OpenApiTypes.BINARY, 404: ERROR},
    )
    def get(self, request: Request, pk: int) -> FileResponse | Response:
        dataset = _own(request, pk)
        zipped = services.file_open(dataset, services.upload_path(dataset)) if dataset.is_ready else None
        if zipped is None:
            return error_response(
                code="not_found", message=_("This dataset has no file to export."), http_status=404
            )
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset.name).strip("_") or f"dataset-{dataset.pk}"
        suffix = "txt" if dataset.is_text else "zip"
        return FileResponse(zipped, as_attachment=True, filename=f"{name}.{suffix}")


class DatasetSamples(APIView):
    @extend_schema(
        summary="The sample grid: one row per class",
        responses={(200, "image/png"): OpenApiTypes.BINARY, 404: ERROR},
    )
    def get(self, request: Request, pk: int) -> HttpResponse | Response:
        dataset = _visible(request, pk)
        samples = services.file_open(dataset, services.samples_path(dataset))
        if samples is None:
            return error_response(code="not_found", message=_("No samples yet."), http_status=404)
        with samples:
            response = HttpResponse(samples.read(), content_type="image/png")
        response["Cache-Control"] = "private, max-age=300"
        return response
