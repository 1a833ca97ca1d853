"""/api/v1/runs/{id}/predict/, mistakes/ and export/...: thin views over training.predict and training.exports.

Another user's run is a 404, a run that cannot predict (still training, code from the assistant) a 409
with the reason, an image that cannot be used a 400 naming it, a user over their share of predictions
(training/limits.py) a 429 with Retry-After, all in buildx/api.py's one error shape.
"""

from __future__ import annotations

import base64
import binascii

from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import signed_in_user
from buildx.api import error_response
from buildx.schema import ERROR
from training import exports, limits, predict
from training.models import Run


def own_run(request: Request, pk: int) -> Run:
    return get_object_or_404(
        Run.objects.select_related("design_version__design", "code_artifact"), pk=pk, owner=request.user
    )


def refused(exc: predict.PredictRefused) -> Response:
    return error_response(code=exc.code, message=exc.message, http_status=exc.http_status)


def too_many(busy: limits.Busy) -> Response:
    response = error_response(code="too_many_requests", message=busy.message, http_status=429)
    response["Retry-After"] = str(busy.retry_after)
    return response


def _images_from(request: Request) -> tuple[list[tuple[str, bytes]], Response | None]:
    """(name, bytes) of every image sent: multipart files ``image``/``images``, or JSON base64 strings."""
    files = request.FILES.getlist("images") + request.FILES.getlist("image") if request.FILES else []
    limit = settings.PREDICT_MAX_IMAGE_BYTES
    out: list[tuple[str, bytes]] = []
    for f in files:
        # Read one byte past the limit, not the whole file: an oversized upload is refused either way.
        out.append((f.name or "image", f.read(limit + 1)))
    if not files and isinstance(request.data, dict):
        items = request.data.get("images") or ([request.data["image"]] if request.data.get("image") else [])
        if not isinstance(items, list):
            items = [items]
        for i, item in enumerate(items):
            if not isinstance(item, str):
                return [], _bad(i, "image_unreadable", _("Send each image as a base64 string or a data URL."))
            text = item.split(",", 1)[1] if item.startswith("data:") else item
            if len(text) > (limit + 2) * 4 // 3 + 4:
                return [], _bad(
                    i,
                    "image_too_large",
                    _("The image is larger than %(max)s kB. Send a smaller image.") % {"max": limit // 1024},
                )
            try:
                out.append((f"image {i + 1}", base64.b64decode(text, validate=True)))
            except (binascii.Error, ValueError):
                return [], _bad(i, "image_unreadable", _("This image is not valid base64."))
    if not out:
        return [], error_response(
            code="no_image",
            message=_("Send at least one PNG or JPEG image (a multipart field named “images”)."),
            fields={"images": [_("This field is required.")]},
        )
    if len(out) > settings.PREDICT_MAX_IMAGES:
        return [], error_response(
            code="too_many_images",
            message=_("Send at most %(max)d images at a time; this request has %(n)d.")
            % {"max": settings.PREDICT_MAX_IMAGES, "n": len(out)},
            fields={"images": [_("Too many images.")]},
        )
    return out, None


def _bad(index: int, code: str, message: str, name: str | None = None) -> Response:
    label = name or _("image %(n)d") % {"n": index + 1}
    return error_response(code=code, message=f"{label}: {message}", fields={f"images[{index}]": [message]})


class RunPredict(APIView):
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema(
        summary="Classify images with a finished run's model",
        request={"multipart/form-data": OpenApiTypes.OBJECT, "application/json": OpenApiTypes.OBJECT},
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="docs/contracts.md section 9"),
            409: ERROR,
            429: ERROR,
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        with limits.prediction_admitted(user_id=signed_in_user(request).pk) as busy:
            if busy is not None:
                return too_many(busy)
            return self._predict(request, pk)

    def _predict(self, request: Request, pk: int) -> Response:
        run = own_run(request, pk)
        try:
            predict.check_predictable(run)
        except predict.PredictRefused as exc:
            return refused(exc)
        images, problem = _images_from(request)
        if problem is not None:
            return problem
        try:
            top_k = int(request.query_params.get("top", 3))
        except ValueError:
            top_k = 3
        try:
            result = predict.predict(run=run, images=[data for _name, data in images], top_k=top_k)
        except predict.PredictRefused as exc:
            return refused(exc)
        except predict.ImageRejected as exc:
            return _bad(exc.index, exc.code, exc.message, images[exc.index][0])
        for item, (name, _data) in zip(result["predictions"], images, strict=True):
            item["name"] = name
        return Response(result)


class RunMistakes(APIView):
    @extend_schema(
        summary="Test images the model gets wrong",
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="docs/contracts.md section 9"),
            409: ERROR,
            429: ERROR,
        },
    )
    def get(self, request: Request, pk: int) -> Response:
        # The whole test split through the model, or a sandbox for the assistant's code: a prediction.
        with limits.prediction_admitted(user_id=signed_in_user(request).pk) as busy:
            if busy is not None:
                return too_many(busy)
            run = own_run(request, pk)
            try:
                return Response(predict.mistakes(run=run))
            except predict.PredictRefused as exc:
                return refused(exc)


def _download(filename: str, content: bytes, content_type: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class RunExport(APIView):
    """GET .../export/<kind>/: weights (safetensors), onnx, bundle (zip) or card (markdown)."""

    @extend_schema(
        summary="Download an export of a run",
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            (200, "application/zip"): OpenApiTypes.BINARY,
            (200, "text/markdown"): OpenApiTypes.STR,
            409: ERROR,
        },
    )
    def get(self, request: Request, pk: int, kind: str):
        run = own_run(request, pk)
        makers = {
            "weights": (exports.weights_file, "application/octet-stream"),
            "onnx": (exports.onnx_file, "application/octet-stream"),
            "bundle": (exports.bundle_file, "application/zip"),
            "card": (exports.card_file, "text/markdown; charset=utf-8"),
        }
        if kind not in makers:
            return error_response(
                code="not_found",
                message=_("There is no export named %(kind)s.") % {"kind": kind},
                http_status=404,
            )
        if kind != "weights" and run.design_version.spec.get("task") == "language_model":
            # ONNX, the bundle and the card are written for image models (issue 16 has not adapted them).
            return error_response(
                code="not_supported",
                message=_("This export is not available for language models yet; download the weights."),
                http_status=409,
            )
        make, content_type = makers[kind]
        try:
            filename, content = make(run=run)
        except predict.PredictRefused as exc:
            return refused(exc)
        return _download(filename, content, content_type)


class RunExports(APIView):
    """What can be downloaded for a run, with the URLs (the run page links them)."""

    @extend_schema(
        summary="A run's downloads",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="docs/contracts.md section 9")},
    )
    def get(self, request: Request, pk: int) -> Response:
        run = own_run(request, pk)
        return Response({"run": run.pk, **exports.available(run=run)})
