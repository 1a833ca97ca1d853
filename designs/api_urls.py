from __future__ import annotations

from django.urls import path

from designs import api

urlpatterns = [
    path("catalog/", api.CatalogView.as_view(), name="api-catalog"),
    path("starters/", api.StarterListView.as_view(), name="api-starters"),
    path("starters/<slug:slug>/", api.StarterDetailView.as_view(), name="api-starter"),
    path("designs/", api.DesignListView.as_view(), name="api-designs"),
    path("designs/validate/", api.ValidateView.as_view(), name="api-design-validate"),
    path("designs/edit/", api.EditView.as_view(), name="api-design-edit"),
    path("designs/<int:pk>/", api.DesignDetailView.as_view(), name="api-design"),
    path("designs/<int:pk>/versions/", api.VersionListView.as_view(), name="api-design-versions"),
    path(
        "designs/<int:pk>/versions/<int:number>/", api.VersionDetailView.as_view(), name="api-design-version"
    ),
    path(
        "designs/<int:pk>/versions/<int:number>/code/", api.VersionCodeView.as_view(), name="api-design-code"
    ),
    path(
        "designs/<int:pk>/versions/<int:number>/download/",
        api.VersionDownloadView.as_view(),
        name="api-design-download",
    ),
    path(
        "designs/<int:pk>/versions/<int:number>/generate/",
        api.VersionGenerateView.as_view(),
        name="api-design-generate",
    ),
    path(
        "designs/<int:pk>/versions/<int:number>/artifacts/",
        api.VersionArtifactsView.as_view(),
        name="api-design-artifacts",
    ),
]
