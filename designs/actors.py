"""Designs' background jobs (the `default` queue): LLM code generation."""

from __future__ import annotations

import dramatiq
from django.conf import settings
from django.contrib.auth import get_user_model

from buildx.live import publish, user_group
from designs import services
from designs.models import CodeArtifact, DesignVersion


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=settings.BUILDX_CODEGEN_TIME_LIMIT_S * 1000)
def generate_code(version_id: int, user_id: int) -> None:
    """Generate, check and store the version's LLM script; tell the owner's pages (`code.ready`)."""
    version = DesignVersion.objects.select_related("design").filter(pk=version_id).first()
    user = get_user_model().objects.filter(pk=user_id).first()
    if version is None or user is None:
        return  # deleted since the request: nothing to do
    try:
        artifact = services.artifact_generate(version=version, user=user)
    except Exception:
        # Never leave the page waiting on a pending artifact: mark it failed, then let Dramatiq log it.
        stuck = list(
            version.artifacts.filter(
                source=CodeArtifact.Source.LLM,
                status__in=[CodeArtifact.Status.PENDING, CodeArtifact.Status.CHECKING],
            ).values_list("pk", flat=True)
        )
        CodeArtifact.objects.filter(pk__in=stuck).update(
            status=CodeArtifact.Status.FAILED, error="Code generation failed on the server."
        )
        for artifact in CodeArtifact.objects.filter(pk__in=stuck):
            publish_code_ready(artifact)
        raise
    publish_code_ready(artifact)


def publish_code_ready(artifact: CodeArtifact) -> None:
    """`code.ready` to the owner's pages (ordered, never raises)."""
    version = artifact.version
    publish(
        user_group(version.design.owner_id),
        {
            "type": "code.ready",
            "artifact": artifact.pk,
            "design": version.design_id,
            "version": version.number,
            "status": artifact.status,
            "source": artifact.source,
        },
    )
