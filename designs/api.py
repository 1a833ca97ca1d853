"""The designs API (/api/v1/): thin views over designs.services. Errors use buildx.api's one shape."""

from __future__ import annotations

from typing import Any, TypeVar

from django.conf import settings
from django.db.models import Model
from django.http import HttpResponse
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ParseError, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import signed_in_user
from buildx.api import error_response
from buildx.schema import ERROR
from designs import catalog, services
from designs.models import Design, DesignVersion
from designs.selectors import with_latest_versions
from designs.serializers import (
    ArtifactListSerializer,
    ArtifactSerializer,
    DesignCreateSerializer,
    DesignSerializer,
    EditRequestSerializer,
    EditResponseSerializer,
    StarterSerializer,
    ValidateResponseSerializer,
    VersionCreateSerializer,
    VersionSerializer,
    VersionSummarySerializer,
)
from designs.validation import SpecError, spec_hash


class SafeJSONParser(JSONParser):
    """JSON, with a size limit and an answer (not a 500) for bodies nested deeper than Python's parser goes."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        limit = settings.BUILDX_MAX_SPEC_BYTES
        length = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        if length > limit:
            raise ValidationError(
                {"spec": [_("The design is too large (more than %(n)s bytes).") % {"n": limit}]}
            )
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ValidationError({"spec": [_("The JSON is nested too deeply.")]}) from None
        except ParseError as exc:
            # A field-level answer like every other bad spec, so that clients handle one shape.
            raise ValidationError(
                {"spec": [_("This is not valid JSON: %(error)s") % {"error": exc.detail}]}
            ) from None


M = TypeVar("M", bound=Model)


def get_object_or_404(model: type[M], **lookup: Any) -> M:
    """DRF's NotFound (code "not_found" in the error shape) rather than Django's Http404."""
    obj = model._default_manager.filter(**lookup).first()
    if obj is None:
        raise NotFound(_("Not found."))
    return obj


def _spec_error(exc: SpecError, *, prefix: str = "") -> Response:
    fields = {f"{prefix}{key}": value for key, value in exc.fields.items()}
    return error_response(
        code="invalid_spec", message=_("The design has settings that need fixing."), fields=fields
    )


def _unwrap_spec(data):
    """The validate endpoint takes the spec itself, or {"spec": spec} like the versions endpoint."""
    if isinstance(data, dict) and set(data) == {"spec"}:
        return data["spec"]
    return data


class CatalogView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        summary="The catalog of layers, transforms, datasets and hyperparameters",
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="designs.catalog.catalog_as_json()")
        },
    )
    def get(self, request: Request) -> Response:
        return Response(catalog.catalog_as_json())


class ValidateView(APIView):
    parser_classes = [SafeJSONParser]

    @extend_schema(
        summary="Validate a spec without saving it",
        request=OpenApiTypes.OBJECT,
        responses={200: ValidateResponseSerializer, 400: ERROR},
    )
    def post(self, request: Request) -> Response:
        try:
            spec, report = services.spec_validate(spec=_unwrap_spec(request.data), user=request.user)
        except SpecError as exc:
            return _spec_error(exc)
        return Response({"spec": spec, "spec_hash": spec_hash(spec), "report": report})


class EditView(APIView):
    parser_classes = [SafeJSONParser]

    @extend_schema(
        summary="Carry out edits on a spec (a report's fix) without saving it",
        description=(
            "Answers the edited spec, normalised. 400 `invalid_spec` (fields `spec.<path>`) when the spec "
            "sent cannot be read; 400 `invalid_edit` (fields `edits[i]`) when an edit is not one of the "
            "vocabulary's, names a layer the spec does not have, or leaves settings that cannot be read."
        ),
        request=EditRequestSerializer,
        responses={200: EditResponseSerializer, 400: ERROR},
    )
    def post(self, request: Request) -> Response:
        serializer = EditRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            spec = services.spec_edit(**serializer.validated_data)
        except SpecError as exc:
            return _spec_error(exc, prefix="spec.")
        except services.EditRefused as exc:
            return error_response(
                code="invalid_edit",
                message=_("This edit cannot be made to the design."),
                fields={f"edits[{exc.index}]": exc.messages},
            )
        return Response({"spec": spec, "spec_hash": spec_hash(spec)})


class DesignListView(GenericAPIView):
    serializer_class = DesignSerializer
    parser_classes = [SafeJSONParser]

    def get_queryset(self):
        return Design.objects.filter(owner=self.request.user)

    @extend_schema(summary="Your designs", responses={200: DesignSerializer(many=True)})
    def get(self, request: Request) -> Response:
        rows = self.paginate_queryset(self.get_queryset())
        assert rows is not None  # the API paginates every list (REST_FRAMEWORK's DEFAULT_PAGINATION_CLASS)
        page = with_latest_versions(list(rows))
        return self.get_paginated_response(DesignSerializer(page, many=True).data)

    @extend_schema(
        summary="Create a design (from a spec, a starter, or empty)",
        request=DesignCreateSerializer,
        responses={201: DesignSerializer, 400: ERROR},
    )
    def post(self, request: Request) -> Response:
        form = DesignCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        try:
            if "starter" in data:
                design = services.design_create_from_starter(
                    owner=signed_in_user(request), slug=data["starter"], name=data.get("name", "")
                )
            else:
                design = services.design_create(
                    owner=signed_in_user(request),
                    name=data["name"],
                    description=data["description"],
                    spec=data.get("spec"),
                )
        except SpecError as exc:
            return _spec_error(exc, prefix="spec.")
        except KeyError:
            return error_response(
                code="invalid",
                message=_("There is no such starter design."),
                fields={"starter": [_("There is no starter %(slug)s.") % {"slug": data["starter"]}]},
            )
        return Response(DesignSerializer(design).data, status=status.HTTP_201_CREATED)


class DesignDetailView(GenericAPIView):
    serializer_class = DesignSerializer
    parser_classes = [SafeJSONParser]

    def get_object(self) -> Design:
        # Another user's design is a 404, not a 403: its existence is not theirs to learn.
        return get_object_or_404(Design, pk=self.kwargs["pk"], owner=self.request.user)

    @extend_schema(summary="A design")
    def get(self, request: Request, pk: int) -> Response:
        return Response(DesignSerializer(self.get_object()).data)

    @extend_schema(
        summary="Rename or describe a design", request=DesignSerializer, responses={200: DesignSerializer}
    )
    def patch(self, request: Request, pk: int) -> Response:
        design = self.get_object()
        form = DesignSerializer(design, data=request.data, partial=True)
        form.is_valid(raise_exception=True)
        services.design_update(
            design=design,
            name=form.validated_data.get("name"),
            description=form.validated_data.get("description"),
        )
        return Response(DesignSerializer(design).data)

    @extend_schema(
        summary="Delete a design with its versions, code and runs (and the runs' files)",
        description="409 `design_busy` while one of its runs is queued, running or interrupted: stop it first.",
        responses={204: None, 404: ERROR, 409: ERROR},
    )
    def delete(self, request: Request, pk: int) -> Response:
        try:
            services.design_delete(design=self.get_object())
        except services.DesignDeleteRefused as exc:
            return error_response(code="design_busy", message=str(exc), http_status=409)
        return Response(status=status.HTTP_204_NO_CONTENT)


class VersionListView(GenericAPIView):
    serializer_class = VersionSummarySerializer
    parser_classes = [SafeJSONParser]

    def get_queryset(self):
        design = get_object_or_404(Design, pk=self.kwargs["pk"], owner=self.request.user)
        return design.versions.order_by("-number")

    @extend_schema(
        summary="A design's versions, newest first", responses={200: VersionSummarySerializer(many=True)}
    )
    def get(self, request: Request, pk: int) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(VersionSummarySerializer(page, many=True).data)

    @extend_schema(
        summary="Save a new version",
        description="201 with the new version; 200 with the latest one when its spec is the same (nothing new).",
        request=VersionCreateSerializer,
        responses={201: VersionSerializer, 200: VersionSerializer, 400: ERROR},
    )
    def post(self, request: Request, pk: int) -> Response:
        design = get_object_or_404(Design, pk=pk, owner=request.user)
        form = VersionCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            version, created = services.design_save_version(design=design, spec=form.validated_data["spec"])
        except SpecError as exc:
            return _spec_error(exc, prefix="spec.")
        return Response(VersionSerializer(version).data, status=status.HTTP_201_CREATED if created else 200)


def _version(request: Request, pk: int, number: int) -> DesignVersion:
    return get_object_or_404(DesignVersion, design__pk=pk, design__owner=request.user, number=number)


class VersionDetailView(APIView):
    @extend_schema(summary="A version: its spec and validation report", responses={200: VersionSerializer})
    def get(self, request: Request, pk: int, number: int) -> Response:
        return Response(VersionSerializer(_version(request, pk, number)).data)


class VersionCodeView(APIView):
    @extend_schema(
        summary="The version's compiled PyTorch script (compiled on first request)",
        responses={200: ArtifactSerializer, 400: ERROR},
    )
    def get(self, request: Request, pk: int, number: int) -> Response:
        try:
            artifact = services.artifact_compile(version=_version(request, pk, number))
        except services.DesignNotValid as exc:
            return _not_valid(exc)
        return Response(ArtifactSerializer(artifact).data)


def _not_valid(exc: services.DesignNotValid) -> Response:
    fields: dict[str, list[str]] = {}
    for error in exc.errors:
        fields.setdefault(error.get("path") or "spec", []).append(error["message"])
    return error_response(
        code="design_not_valid", message=_("Fix the design's errors before compiling it."), fields=fields
    )


class VersionGenerateView(APIView):
    @extend_schema(
        summary="Ask the AI to write the version's script (checked before it is offered)",
        request=None,
        responses={202: ArtifactListSerializer, 400: ERROR, 404: ERROR, 503: ERROR},
    )
    def post(self, request: Request, pk: int, number: int) -> Response:
        version = _version(request, pk, number)
        try:
            artifact = services.artifact_request_generation(version=version, user=signed_in_user(request))
        except services.GenerationNotAvailable:
            return error_response(
                code="llm_not_configured",
                message=_("AI code generation is not set up on this server."),
                http_status=503,
            )
        except services.DesignNotValid as exc:
            return _not_valid(exc)
        return Response(ArtifactListSerializer(artifact).data, status=status.HTTP_202_ACCEPTED)


class VersionArtifactsView(APIView):
    @extend_schema(
        summary="The version's code artifacts (compiled and AI-written), with their checks and attempts",
        responses={200: ArtifactListSerializer(many=True), 404: ERROR},
    )
    def get(self, request: Request, pk: int, number: int) -> Response:
        version = _version(request, pk, number)
        return Response(ArtifactListSerializer(version.artifacts.order_by("-created_at"), many=True).data)


class VersionDownloadView(APIView):
    @extend_schema(
        summary="Download the script with buildx_runtime.py beside it (zip)",
        responses={(200, "application/zip"): OpenApiTypes.BINARY, 400: ERROR},
    )
    def get(self, request: Request, pk: int, number: int) -> HttpResponse:
        try:
            artifact = services.artifact_compile(version=_version(request, pk, number))
        except services.DesignNotValid as exc:
            return _not_valid(exc)
        filename, data = services.bundle_zip(artifact=artifact)
        response = HttpResponse(data, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


class StarterListView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(summary="Starter designs to open", responses={200: StarterSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response(StarterSerializer(services.starter_list(), many=True).data)


class StarterDetailView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(summary="One starter design", responses={200: StarterSerializer, 404: ERROR})
    def get(self, request: Request, slug: str) -> Response:
        starter = services.starter_get(slug=slug)
        if starter is None:
            return error_response(
                code="not_found", message=_("There is no such starter design."), http_status=404
            )
        return Response(StarterSerializer(starter).data)
