from __future__ import annotations

from django.urls import path

from designs import views

urlpatterns = [
    path("designs/new/", views.design_new, name="design-new"),
    path("designs/import/", views.design_import, name="design-import"),
    path("designs/<int:pk>/", views.design_editor, name="design-editor"),
    path("designs/<int:pk>/rename/", views.design_rename, name="design-rename"),
    path("designs/<int:pk>/delete/", views.design_delete, name="design-delete"),
    path("designs/<int:pk>/version-ids.json", views.design_version_ids, name="design-version-ids"),
    path("designs/<int:pk>/export.json", views.design_export, name="design-export"),
    path("designs/<int:pk>/diff/", views.design_diff, name="design-diff"),
    path("datasets/<str:name>/samples.png", views.dataset_samples, name="dataset-samples"),
]
