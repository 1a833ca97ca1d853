"""/api/v1/runs/: thin DRF views over ``training.services``. Another user's run is a 404 everywhere."""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import signed_in_user
from buildx.api import error_response
from buildx.schema import ERROR
from designs.models import DesignVersion
from training import run_table, services
from training.models import Run, RunArtifact, RunEvent
from training.selectors import (
    accuracy_value,
    runs_viewable_by,
    with_own_queue_position,
    with_queue_position,
)
from training.services.artifacts import artifact_response

EVENTS_PAGE_MAX = 1000


class RunSerializer(serializers.ModelSerializer):
    design = serializers.IntegerField(source="design_version.design_id", read_only=True)
    design_name = serializers.CharField(source="design_version.design.name", read_only=True)
    version_number = serializers.IntegerField(source="design_version.number", read_only=True)
    queue_position = serializers.IntegerField(read_only=True, allow_null=True)
    url = serializers.SerializerMethodField()
    test_accuracy = serializers.SerializerMethodField(
        help_text="The test accuracy BuildX measured (0..1); null before it, or when only the script reported one."
    )
    best_val_acc = serializers.SerializerMethodField(
        help_text="The best validation accuracy over the epochs."
    )
    tags = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "id",
            "url",
            "design",
            "design_name",
            "design_version",
            "version_number",
            "code_artifact",
            "dataset",
            "hyperparameters",
            "status",
            "epoch",
            "epochs",
            "progress",
            "eta_seconds",
            "device",
            "params",
            "isolation",
            "created_at",
            "queued_at",
            "started_at",
            "finished_at",
            "run_seconds",
            "timings",
            "metrics",
            "cause",
            "error",
            "traceback",
            "heartbeat_at",
            "attempt",
            "checkpoint_epoch",
            "last_seq",
            "log_lines",
            "log_dropped",
            "queue_position",
            "can_stop",
            "can_resume",
            "can_delete",
            "archived_at",
            "test_accuracy",
            "best_val_acc",
            "tags",
            "note",
        ]
        read_only_fields = fields

    def get_url(self, run: Run) -> str:
        return f"/runs/{run.pk}/"

    # The list annotates it in its one query (training.run_table); a single run computes it here.
    def get_test_accuracy(self, run: Run) -> float | None:
        if hasattr(run, "test_accuracy"):
            return run.test_accuracy
        return accuracy_value(run)

    def get_best_val_acc(self, run: Run) -> float | None:
        return run.best_val_acc

    def get_tags(self, run: Run) -> list[str]:
        return [t.name for t in run.tags.all()]


class RunLabelSerializer(serializers.Serializer):
    """The owner's labels on a run: either or both; a field left out keeps its value."""

    tags = serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text="Every tag of the run (replaces them): one word each, at most 10; lower-cased.",
    )
    note = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, help_text="At most 2000 characters."
    )


class RunCreateSerializer(serializers.Serializer):
    """Which version to train: its id, or its design's id and its number (what the designs API gives)."""

    design_version = serializers.IntegerField(
        required=False,
        help_text=_("The version's id (`id` of a version, or of a design's `latest_version`)."),
    )
    design = serializers.IntegerField(required=False, help_text=_("The design's id, with `version`."))
    version = serializers.IntegerField(
        required=False, min_value=1, help_text=_("The version's number in its design, with `design`.")
    )
    code_artifact = serializers.IntegerField(
        required=False,
        help_text=_("Code of this version to train; else its newest ready code or its compiled script."),
    )
    spec = serializers.JSONField(
        required=False,
        help_text="The design as the client shows it: a version with another spec is refused (409 unsaved_changes).",
    )

    def validate(self, attrs: dict) -> dict:
        by_number = "design" in attrs or "version" in attrs
        if "design_version" in attrs and by_number:
            raise serializers.ValidationError(
                {"design_version": [_("Give design_version, or design and version, not both.")]}
            )
        if "design_version" not in attrs and not by_number:
            raise serializers.ValidationError(
                {"design_version": [_("Say which version to train: design_version, or design and version.")]}
            )
        for name in ("design", "version"):
            if by_number and name not in attrs:
                raise serializers.ValidationError({name: [_("Give design and version together.")]})
        return attrs


def _refused(exc: services.RunRefused) -> Response:
    if exc.code == "not_found":
        return error_response(code="not_found", message=exc.message, http_status=404)
    fields = {exc.field: [exc.message]} if exc.field else None
    conflicts = ("not_stoppable", "not_resumable", "conflict", "unsaved_changes", "not_finished")
    http = status.HTTP_409_CONFLICT if exc.code in conflicts else 400
    return error_response(code=exc.code, message=exc.message, fields=fields, http_status=http)


def _own_runs(request: Request):
    return with_queue_position(
        Run.objects.filter(owner=signed_in_user(request)).select_related("design_version__design")
    )


def _viewable_run(request: Request, pk: int) -> Run:
    """Reading a run: its owner, or their instructor. Changing it stays with the owner."""
    return get_object_or_404(runs_viewable_by(signed_in_user(request)), pk=pk)


def _id_param(name: str, value: str) -> int:
    """A query parameter that names a row: digits within a database id's range, else a 400."""
    if not value.isdigit() or int(value) >= 2**63:
        raise serializers.ValidationError({name: [_("Give an id: a whole number.")]})
    return int(value)


class RunTablePagination(PageNumberPagination):
    django_paginator_class = run_table.TablePaginator


class RunListCreate(generics.ListAPIView):
    serializer_class = RunSerializer
    pagination_class = RunTablePagination

    def get_queryset(self):
        user = signed_in_user(self.request)
        params = self.request.query_params
        query = run_table.table_query(params)
        if query.errors:
            raise serializers.ValidationError(query.errors)
        if query.scope == "students" and not run_table.teaches(user):
            raise Http404
        qs = run_table.table_runs(user=user, query=query)
        if params.get("design_version"):
            qs = qs.filter(design_version_id=_id_param("design_version", params["design_version"]))
        return with_queue_position(qs)

    @extend_schema(
        summary="The runs table: your runs (or your students'), sorted and filtered",
        description=(
            "The same view as the page /runs/ for the same query string, 50 a page (`page`). Sorting "
            "and filtering happen on the server, hyperparameters included."
        ),
        parameters=[
            OpenApiParameter(
                "sort",
                str,
                description=(
                    "A column key, `-` first for descending: id, design, version, dataset, status, epochs, "
                    "best, test, duration, device, created (default -created), note, owner, or "
                    "hp.<hyperparameter> such as hp.learning_rate."
                ),
            ),
            OpenApiParameter(
                "scope",
                str,
                enum=["mine", "students"],
                description="students: the runs of the students of the courses you teach (404 if you teach none).",
            ),
            OpenApiParameter("status", str, description="Comma-separated statuses (queued,running,...)."),
            OpenApiParameter("design", int, description="Runs of this design."),
            OpenApiParameter("design_version", int, description="Runs of this version (its id)."),
            OpenApiParameter("dataset", str, description="Runs on this dataset."),
            OpenApiParameter("tag", str, description="Runs with this tag."),
            OpenApiParameter(
                "hp.learning_rate.min",
                float,
                description=(
                    "A number hyperparameter's lower bound, inclusive (any hyperparameter: "
                    "hp.<name>.min, hp.<name>.max; a choice one: hp.<name>=<value>)."
                ),
            ),
            OpenApiParameter(
                "hp.learning_rate.max", float, description="A number hyperparameter's upper bound, inclusive."
            ),
            OpenApiParameter(
                "cols", str, description="The page's columns (comma-separated keys); the API ignores it."
            ),
            OpenApiParameter(
                "archived",
                str,
                enum=["false", "true", "all"],
                description="false (default): hide archived runs; true: only archived runs; all: both.",
            ),
        ],
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Train a design version",
        description=(
            "The version is named by its id (`design_version`) or by its design and number "
            "(`design`, `version`), as the designs API gives them."
        ),
        request=RunCreateSerializer,
        responses={201: RunSerializer, 404: ERROR},
    )
    def post(self, request: Request) -> Response:
        body = RunCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        versions = DesignVersion.objects.filter(design__owner=signed_in_user(request)).select_related(
            "design"
        )
        if "design_version" in data:
            version, field = versions.filter(pk=data["design_version"]).first(), "design_version"
        else:
            version, field = (
                versions.filter(design_id=data["design"], number=data["version"]).first(),
                "version",
            )
        if version is None:
            # Another user's version and one that does not exist get the same answer.
            return error_response(
                code="not_found",
                message=str(_("That design version does not exist.")),
                fields={field: [str(_("No such design version."))]},
                http_status=404,
            )
        artifact = services.run_code(version=version, artifact_id=body.validated_data.get("code_artifact"))
        if artifact is None:
            return error_response(
                code="invalid",
                message=str(_("Choose code of this design version to train.")),
                fields={"code_artifact": [str(_("No such code for this version."))]},
            )
        try:
            run = services.run_create(
                owner=signed_in_user(request),
                version=version,
                artifact=artifact,
                spec=body.validated_data.get("spec"),
            )
        except services.RunRefused as exc:
            return _refused(exc)
        return Response(RunSerializer(with_own_queue_position(run)).data, status=status.HTTP_201_CREATED)


class RunDetail(generics.RetrieveAPIView):
    serializer_class = RunSerializer
    # Tags and a note come as JSON: a form body would turn `tags=639` into ["639"] and pass the list field.
    parser_classes = [JSONParser]

    def get_queryset(self):
        return with_queue_position(
            runs_viewable_by(self.request.user).select_related("design_version__design")
        )

    @extend_schema(
        summary="Delete a finished run with its events, metrics, feedback and files",
        description=(
            "204 when deleted. 409 `not_finished` while the run is queued, running or interrupted: stop it "
            "first (POST .../stop/), then delete it. Another user's run is a 404."
        ),
        request=None,
        responses={204: None, 404: ERROR, 409: ERROR},
    )
    def delete(self, request: Request, pk: int) -> Response:
        run = get_object_or_404(Run, pk=pk, owner=request.user)
        try:
            services.run_delete(run=run)
        except services.RunRefused as exc:
            return _refused(exc)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Set a run's tags and note (the owner's runs only)",
        request=RunLabelSerializer,
        responses={200: RunSerializer, 400: ERROR, 404: ERROR},
    )
    def patch(self, request: Request, pk: int) -> Response:
        run = get_object_or_404(Run, pk=pk, owner=signed_in_user(request))
        body = RunLabelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            run = services.run_label(
                run=run, tags=body.validated_data.get("tags"), note=body.validated_data.get("note")
            )
        except services.RunRefused as exc:
            return _refused(exc)
        return Response(RunSerializer(with_own_queue_position(run)).data)


class RunArchive(APIView):
    """Archive a finished run (hidden from default lists) or unarchive it; ``archive`` says which."""

    archive = True

    @extend_schema(request=None, responses={200: RunSerializer, 404: ERROR, 409: ERROR})
    def post(self, request: Request, pk: int) -> Response:
        run = get_object_or_404(Run, pk=pk, owner=request.user)
        try:
            run = services.run_archive(run=run) if self.archive else services.run_unarchive(run=run)
        except services.RunRefused as exc:
            return _refused(exc)
        return Response(RunSerializer(with_own_queue_position(run)).data)


class RunEvents(APIView):
    """Stored events after ``after`` (a sequence number), oldest first, at most ``limit``."""

    @extend_schema(
        parameters=[
            OpenApiParameter("after", int, description="Return events with a larger sequence number."),
            OpenApiParameter("before", int, description="Return events with a smaller sequence number."),
            OpenApiParameter("limit", int, description=f"At most this many (1 to {EVENTS_PAGE_MAX})."),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request, pk: int) -> Response:
        run = _viewable_run(request, pk)
        try:
            after = max(int(request.query_params.get("after", 0)), 0)
            limit = min(max(int(request.query_params.get("limit", 500)), 1), EVENTS_PAGE_MAX)
            before_text = request.query_params.get("before")
            before = int(before_text) if before_text else None
        except ValueError:
            return error_response(code="invalid", message=str(_("after, before and limit are numbers.")))
        qs = RunEvent.objects.filter(run=run, seq__gt=after)
        if before is not None:
            qs = qs.filter(seq__lt=before)
        events = [e.as_message() for e in qs.order_by("seq")[: limit + 1]]
        more = len(events) > limit
        events = events[:limit]
        return Response(
            {
                "run": run.pk,
                "events": events,
                "more": more,
                "last_seq": run.last_seq,
                "next_after": events[-1]["seq"] if events else after,
            }
        )


class RunMetrics(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, pk: int) -> Response:
        run = _viewable_run(request, pk)
        return Response(
            {
                "run": run.pk,
                "epochs": [m.as_dict() for m in run.epoch_metrics.order_by("epoch")],
                "test": run.metrics,
            }
        )


class RunStop(APIView):
    @extend_schema(request=None, responses={202: RunSerializer, 409: ERROR})
    def post(self, request: Request, pk: int) -> Response:
        run = get_object_or_404(Run, pk=pk, owner=request.user)
        try:
            run = services.run_stop(run=run)
        except services.RunRefused as exc:
            return _refused(exc)
        return Response(RunSerializer(with_own_queue_position(run)).data, status=status.HTTP_202_ACCEPTED)


class RunResume(APIView):
    @extend_schema(request=None, responses={202: RunSerializer, 409: ERROR})
    def post(self, request: Request, pk: int) -> Response:
        run = get_object_or_404(Run, pk=pk, owner=request.user)
        try:
            run = services.run_resume(run=run)
        except services.RunRefused as exc:
            return _refused(exc)
        return Response(RunSerializer(with_own_queue_position(run)).data, status=status.HTTP_202_ACCEPTED)


def artifact_dict(artifact: RunArtifact) -> dict:
    return {
        "kind": artifact.kind,
        "name": artifact.get_kind_display(),
        "filename": artifact.filename,
        "size": artifact.size,
        "epoch": artifact.epoch,
        "updated_at": artifact.updated_at,
        "url": f"/api/v1/runs/{artifact.run_id}/artifacts/{artifact.kind}/",
    }


class RunArtifacts(APIView):
    @extend_schema(operation_id="runs_artifacts_list", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, pk: int) -> Response:
        run = _viewable_run(request, pk)
        return Response({"run": run.pk, "artifacts": [artifact_dict(a) for a in run.artifacts.all()]})


class RunArtifactDownload(APIView):
    @extend_schema(
        operation_id="runs_artifacts_download",
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, pk: int, kind: str):
        artifact = get_object_or_404(RunArtifact, run=_viewable_run(request, pk), kind=kind)
        return artifact_response(artifact, download_name=f"run-{pk}-{artifact.filename}")
