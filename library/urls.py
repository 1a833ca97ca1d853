from __future__ import annotations

from django.urls import path

from library import views

urlpatterns = [
    path("datasets/", views.dataset_list, name="dataset-list"),
    path("datasets/<int:pk>/", views.dataset_detail, name="dataset-detail"),
    path("datasets/<int:pk>/rename/", views.dataset_rename, name="dataset-rename"),
    path("datasets/<int:pk>/delete/", views.dataset_delete, name="dataset-delete"),
    path("datasets/<int:pk>/share/", views.dataset_share, name="dataset-share"),
]
