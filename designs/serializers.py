"""Serializers of the designs API: shapes of the JSON in and out, no logic (services hold it)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from designs.edits import MAX_EDITS
from designs.models import CodeArtifact, Design, DesignVersion


class VersionSummarySerializer(serializers.ModelSerializer):
    valid = serializers.BooleanField(source="is_valid", read_only=True)
    ready_to_train = serializers.BooleanField(read_only=True)
    params = serializers.SerializerMethodField()

    class Meta:
        model = DesignVersion
        # ``id`` is what POST /api/v1/runs/ takes as ``design_version``; ``number`` names it in URLs.
        fields = ["id", "number", "spec_hash", "valid", "ready_to_train", "params", "created_at"]

    def get_params(self, version: DesignVersion) -> int | None:
        return version.report.get("totals", {}).get("params")


class VersionSerializer(VersionSummarySerializer):
    class Meta(VersionSummarySerializer.Meta):
        fields = [*VersionSummarySerializer.Meta.fields, "spec", "report"]


class TextField(serializers.CharField):
    """A CharField that takes text only: DRF's turns a number into its digits (`"name": 5` → "5")."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class DesignSerializer(serializers.ModelSerializer):
    latest_version = VersionSummarySerializer(read_only=True, allow_null=True)
    name = TextField(max_length=120, required=False)
    description = TextField(required=False, allow_blank=True)

    class Meta:
        model = Design
        fields = ["id", "name", "description", "starter", "created_at", "updated_at", "latest_version"]
        read_only_fields = ["id", "starter", "created_at", "updated_at", "latest_version"]


class DesignCreateSerializer(serializers.Serializer):
    name = TextField(max_length=120, required=False, allow_blank=False)
    description = TextField(required=False, allow_blank=True, default="")
    spec = serializers.JSONField(
        required=False, help_text=_("A design spec: its version 1 is saved with it.")
    )
    starter = serializers.CharField(
        required=False, max_length=64, help_text=_("Open a starter design by slug.")
    )

    def validate(self, attrs: dict) -> dict:
        if "spec" in attrs and "starter" in attrs:
            raise serializers.ValidationError({"starter": [_("Give a spec or a starter, not both.")]})
        if "starter" not in attrs and not attrs.get("name"):
            raise serializers.ValidationError({"name": [_("Give the design a name.")]})
        return attrs


class VersionCreateSerializer(serializers.Serializer):
    spec = serializers.JSONField(
        help_text=_("The design spec (the original BuildX front end's JSON is accepted).")
    )


class ValidateResponseSerializer(serializers.Serializer):
    spec = serializers.JSONField(help_text=_("The normalised spec (what saving would store)."))
    spec_hash = serializers.CharField()
    report = serializers.JSONField(help_text=_("The validation report: docs/contracts.md section 5."))


class EditRequestSerializer(serializers.Serializer):
    spec = serializers.JSONField(help_text=_("The design spec to edit, as the editor holds it."))
    edits = serializers.ListField(
        child=serializers.JSONField(),
        min_length=1,
        max_length=MAX_EDITS,
        help_text=_(
            'Edits, carried out in order: {"op": "set_hyperparameter" | "set_layer_param" | "insert_layer" | '
            '"remove_layer" | "add_preprocessing", ...} (docs/contracts.md section 5, "Edits"), such as a '
            "report's fix.edits."
        ),
    )


class EditResponseSerializer(serializers.Serializer):
    spec = serializers.JSONField(help_text=_("The edited spec, normalised (what saving would store)."))
    spec_hash = serializers.CharField()


class ArtifactSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="version.number", read_only=True)
    filename = serializers.SerializerMethodField()

    class Meta:
        model = CodeArtifact
        fields = [
            "id",
            "version",
            "source",
            "status",
            "code",
            "code_hash",
            "checks",
            "error",
            "filename",
            "created_at",
        ]

    def get_filename(self, artifact: CodeArtifact) -> str:
        from designs.services import script_filename

        return script_filename(artifact.version)


class ArtifactListSerializer(serializers.ModelSerializer):
    """An artifact with its checks and the LLM's attempts: what the "AI code" panel lists."""

    version = serializers.IntegerField(source="version.number", read_only=True)
    tokens = serializers.SerializerMethodField()

    class Meta:
        model = CodeArtifact
        fields = [
            "id",
            "version",
            "source",
            "status",
            "code",
            "code_hash",
            "checks",
            "attempts",
            "error",
            "latency_ms",
            "prompt_tokens",
            "completion_tokens",
            "tokens",
            "created_at",
        ]

    def get_tokens(self, artifact: CodeArtifact) -> int:
        return artifact.prompt_tokens + artifact.completion_tokens


class StarterSerializer(serializers.Serializer):
    slug = serializers.CharField()
    title = serializers.DictField(child=serializers.CharField())
    description = serializers.DictField(child=serializers.CharField())
    dataset = serializers.CharField(source="spec.dataset")
    spec = serializers.JSONField()
