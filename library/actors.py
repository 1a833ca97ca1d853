"""The dataset library's background job (the `default` queue): the check of an uploaded zip."""

from __future__ import annotations

import dramatiq
from django.conf import settings

from library import services, text_datasets
from library.models import Dataset


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=settings.DATASET_CHECK_TIME_LIMIT_S * 1000)
def check_dataset(dataset_id: int) -> None:
    """Check one upload (a zip of images, or a text); the row's status (checking -> ready | rejected) says
    how it went."""
    if Dataset.objects.filter(pk=dataset_id, kind=Dataset.Kind.TEXT).exists():
        text_datasets.text_check(dataset_id=dataset_id)
    else:
        services.dataset_check(dataset_id=dataset_id)
