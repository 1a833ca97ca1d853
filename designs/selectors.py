"""Reads that are more than a filter."""

from __future__ import annotations

from django.db.models import OuterRef, Subquery

from designs.models import Design, DesignVersion


def with_latest_versions(designs: list[Design]) -> list[Design]:
    """Attach each design's latest version (one query for the whole list, not one per design)."""
    latest = DesignVersion.objects.filter(design=OuterRef("design")).order_by("-number").values("pk")[:1]
    versions = DesignVersion.objects.filter(design__in=designs, pk=Subquery(latest))
    by_design = {version.design_id: version for version in versions}
    for design in designs:
        design._latest_version = by_design.get(design.pk)
    return designs
