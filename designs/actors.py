"""Designs' background jobs (the `default` queue): LLM code generation."""

from __future__ import annotations

import dramatiq
from django.conf import settings
from django.contrib.auth import get_user_model

from buildx.live import publish, user_group
from designs import services
from designs.models import CodeArtifact


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=settings.BUILDX_CODEGEN_TIME_LIMIT_S * 1000)
def generate_code(artifact_id: int, user_id: int) -> None:
    """Generate, check and store one pending LLM artifact; tell the owner's pages (`code.ready`).

    The artifact is claimed first (pending → checking, a compare-and-set): a job sent twice, or an
    artifact another job already took, does nothing.
    """
    user = get_user_model().objects.filter(pk=user_id).first()
    artifact = services.artifact_claim(artifact_id=artifact_id) if user is not None else None
    if artifact is None or user is None:
        return  # taken by another job, ended, or deleted since the request: nothing to do
    try:
        artifact = services.artifact_generate(version=artifact.version, user=user, artifact=artifact)
    except Exception:
        # Never leave the page waiting: mark this artifact (only this one) failed, then let Dramatiq log it.
        failed = services.artifact_fail(
            artifact_id=artifact_id, error="Code generation failed on the server."
        )
        if failed is not None:
            publish_code_ready(failed)
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
