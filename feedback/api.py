"""Feedback API: read a run's feedback, apply one of its suggestions, rate it. Owner only (404 otherwise)."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.fields import empty
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import signed_in_user
from buildx.api import error_response
from buildx.schema import ERROR
from feedback import services
from feedback.models import Feedback
from training.models import Run


def _own_run(request: Request, pk: int) -> Run:
    return get_object_or_404(Run.objects.select_related("design_version__design"), pk=pk, owner=request.user)


def _feedback_or_none(run: Run) -> Feedback | None:
    return Feedback.objects.filter(run=run).select_related("run").first()


def _no_feedback() -> Response:
    return error_response(
        code="no_feedback",
        message=_("This run has no feedback yet: it comes a few seconds after the run finishes."),
        http_status=409,
    )


def _refused(exc: services.FeedbackRefused) -> Response:
    if exc.code == "not_found":
        return error_response(code="not_found", message=exc.message, http_status=404)
    fields = {exc.field: [exc.message]} if exc.field else None
    return error_response(code=exc.code, message=exc.message, fields=fields)


class ApplySerializer(serializers.Serializer):
    index = serializers.IntegerField(min_value=0)


class RequiredBooleanField(serializers.BooleanField):
    # DRF reads a boolean missing from a form (multipart or urlencoded) as false, as an unticked HTML
    # checkbox: a client that forgot the field would rate the feedback "not helpful". Missing is missing.
    default_empty_html = empty


class RateSerializer(serializers.Serializer):
    helpful = RequiredBooleanField()


class RunFeedback(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, pk: int) -> Response:
        run = _own_run(request, pk)
        feedback = _feedback_or_none(run)
        if feedback is None:
            return Response({"run": run.pk, "status": Feedback.Status.PENDING, "findings": []})
        return Response(services.feedback_view(feedback=feedback))


class RunFeedbackApply(APIView):
    @extend_schema(
        request=ApplySerializer, responses={201: OpenApiTypes.OBJECT, 200: OpenApiTypes.OBJECT, 409: ERROR}
    )
    def post(self, request: Request, pk: int) -> Response:
        run = _own_run(request, pk)
        feedback = _feedback_or_none(run)
        if feedback is None:
            return _no_feedback()
        data = ApplySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            version, created = services.suggestion_apply(
                feedback=feedback, index=data.validated_data["index"], user=signed_in_user(request)
            )
        except services.FeedbackRefused as exc:
            return _refused(exc)
        return Response(
            {
                "design": version.design_id,
                "version": version.pk,
                "number": version.number,
                "created": created,
                "valid": version.is_valid,
                "editor_url": services.editor_url(version),
            },
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class TrySerializer(serializers.Serializer):
    top = serializers.IntegerField(min_value=1, max_value=3, required=False)


class RunFeedbackTry(APIView):
    """Try the top suggestions: each trained as a short run; the feedback then carries ``tried``."""

    @extend_schema(request=TrySerializer, responses={202: OpenApiTypes.OBJECT, 400: ERROR, 409: ERROR})
    def post(self, request: Request, pk: int) -> Response:
        run = _own_run(request, pk)
        feedback = _feedback_or_none(run)
        if feedback is None:
            return _no_feedback()
        data = TrySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            services.suggestions_try(
                feedback=feedback, user=signed_in_user(request), top=data.validated_data.get("top")
            )
        except services.FeedbackRefused as exc:
            return _refused(exc)
        return Response(services.feedback_view(feedback=feedback), status=status.HTTP_202_ACCEPTED)


class RunFeedbackRate(APIView):
    @extend_schema(request=RateSerializer, responses={200: OpenApiTypes.OBJECT, 409: ERROR})
    def post(self, request: Request, pk: int) -> Response:
        run = _own_run(request, pk)
        feedback = _feedback_or_none(run)
        if feedback is None:
            return _no_feedback()
        data = RateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        feedback = services.feedback_rate(feedback=feedback, helpful=data.validated_data["helpful"])
        return Response(services.feedback_view(feedback=feedback))
