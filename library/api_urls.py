from __future__ import annotations

from django.urls import path

from library import api

urlpatterns = [
    path("datasets/", api.DatasetListCreate.as_view(), name="api-datasets"),
    path("datasets/<int:pk>/", api.DatasetDetail.as_view(), name="api-dataset"),
    path("datasets/<int:pk>/upload/", api.DatasetUpload.as_view(), name="api-dataset-upload"),
    path("datasets/<int:pk>/share/", api.DatasetShare.as_view(), name="api-dataset-share"),
    path("datasets/<int:pk>/export/", api.DatasetExport.as_view(), name="api-dataset-export"),
    path("datasets/<int:pk>/samples/", api.DatasetSamples.as_view(), name="api-dataset-samples"),
]
