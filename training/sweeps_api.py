"""/api/v1/sweeps/: thin DRF views over ``training.services.sweeps``. Another user's sweep is a 404."""

from __future__ import annotations

from django.db import transaction
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import signed_in_user
from buildx.api import error_response
from buildx.schema import ERROR
from designs.models import DesignVersion
from training.models import Sweep
from training.services import sweeps
from training.services.lifecycle import RunRefused


class SweepCreateSerializer(serializers.Serializer):
    design_version = serializers.IntegerField(
        help_text=_("The starting version: every trial changes only what the space varies.")
    )
    space = serializers.JSONField(
        help_text='What to vary: {"learning_rate": {"low": 0.0001, "high": 0.1, "log": true}, '
        '"batch_size": {"choices": [32, 64]}, "dropout": {"low": 0, "high": 0.5}, "epochs": {"low": 2, '
        '"high": 10}, "weight_decay": {"low": 0, "high": 0.01}}'
    )
    n_trials = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    time_budget_s = serializers.IntegerField(
        required=False, allow_null=True, min_value=60, max_value=7 * 24 * 3600
    )
    concurrency = serializers.IntegerField(required=False, default=2, min_value=1)
    first = serializers.JSONField(
        required=False, help_text='Points tried before sampling: [{"learning_rate": 0.01}]'
    )


def _refused(exc: RunRefused) -> Response:
    if exc.code == "not_found":
        return error_response(code="not_found", message=exc.message, http_status=404)
    fields = {exc.field: [exc.message]} if exc.field else None
    http = status.HTTP_409_CONFLICT if exc.code in ("not_stoppable", "no_best") else 400
    return error_response(code=exc.code, message=exc.message, fields=fields, http_status=http)


def _own(request: Request, pk: int) -> Sweep:
    return get_object_or_404(
        Sweep.objects.filter(owner=signed_in_user(request)).select_related("design_version"), pk=pk
    )


class SweepListCreate(APIView):
    @extend_schema(operation_id="sweeps_list", responses={200: dict})
    def get(self, request: Request) -> Response:
        rows = Sweep.objects.filter(owner=signed_in_user(request)).select_related("design_version")[:100]
        return Response({"results": [sweeps.sweep_view(sweep=s) for s in rows]})

    @extend_schema(request=SweepCreateSerializer, responses={201: dict, 400: ERROR, 404: ERROR})
    def post(self, request: Request) -> Response:
        data = SweepCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = signed_in_user(request)
        version = (
            DesignVersion.objects.filter(pk=data.validated_data["design_version"], design__owner=user)
            .select_related("design")
            .first()
        )
        if version is None:
            return error_response(
                code="not_found", message=str(_("That design version does not exist.")), http_status=404
            )
        try:
            with transaction.atomic():
                sweep = sweeps.sweep_create(
                    owner=user,
                    version=version,
                    space=data.validated_data["space"],
                    n_trials=data.validated_data.get("n_trials"),
                    time_budget_s=data.validated_data.get("time_budget_s"),
                    concurrency=data.validated_data["concurrency"],
                    first=data.validated_data.get("first"),
                )
        except RunRefused as exc:
            return _refused(exc)
        sweep.refresh_from_db()
        return Response(sweeps.sweep_view(sweep=sweep), status=201)


class SweepDetail(APIView):
    @extend_schema(responses={200: dict, 404: ERROR})
    def get(self, request: Request, pk: int) -> Response:
        return Response(sweeps.sweep_view(sweep=_own(request, pk)))


class SweepStop(APIView):
    @extend_schema(request=None, responses={200: dict, 404: ERROR, 409: ERROR})
    def post(self, request: Request, pk: int) -> Response:
        try:
            sweep = sweeps.sweep_stop(sweep=_own(request, pk))
        except RunRefused as exc:
            return _refused(exc)
        return Response(sweeps.sweep_view(sweep=sweep))


class SweepPromote(APIView):
    @extend_schema(request=None, responses={201: dict, 404: ERROR, 409: ERROR})
    def post(self, request: Request, pk: int) -> Response:
        sweep = _own(request, pk)
        try:
            version = sweeps.sweep_promote(sweep=sweep)
        except RunRefused as exc:
            return _refused(exc)
        return Response(
            {
                "design": version.design_id,
                "design_version": version.pk,
                "version_number": version.number,
                "url": f"/designs/{version.design_id}/",
            },
            status=201,
        )
