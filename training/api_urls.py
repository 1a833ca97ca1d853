from __future__ import annotations

from django.urls import path

from training import api, generate_api, predict_api, sse, sweeps_api

urlpatterns = [
    path("runs/", api.RunListCreate.as_view(), name="api-runs"),
    path("runs/<int:pk>/", api.RunDetail.as_view(), name="api-run"),
    path("runs/<int:pk>/events/", api.RunEvents.as_view(), name="api-run-events"),
    path("runs/<int:pk>/stream/", sse.run_stream, name="api-run-stream"),
    path("runs/<int:pk>/metrics/", api.RunMetrics.as_view(), name="api-run-metrics"),
    path("runs/<int:pk>/stop/", api.RunStop.as_view(), name="api-run-stop"),
    path("runs/<int:pk>/resume/", api.RunResume.as_view(), name="api-run-resume"),
    path("runs/<int:pk>/archive/", api.RunArchive.as_view(archive=True), name="api-run-archive"),
    path("runs/<int:pk>/unarchive/", api.RunArchive.as_view(archive=False), name="api-run-unarchive"),
    path("runs/<int:pk>/artifacts/", api.RunArtifacts.as_view(), name="api-run-artifacts"),
    path("runs/<int:pk>/artifacts/<str:kind>/", api.RunArtifactDownload.as_view(), name="api-run-artifact"),
    # Predictions and exports (issue 9).
    path("runs/<int:pk>/predict/", predict_api.RunPredict.as_view(), name="api-run-predict"),
    path("runs/<int:pk>/mistakes/", predict_api.RunMistakes.as_view(), name="api-run-mistakes"),
    path("runs/<int:pk>/exports/", predict_api.RunExports.as_view(), name="api-run-exports"),
    path("runs/<int:pk>/export/<str:kind>/", predict_api.RunExport.as_view(), name="api-run-export"),
    path("runs/<int:pk>/generate/", generate_api.RunGenerate.as_view(), name="api-run-generate"),
    # Sweeps (issue 17).
    path("sweeps/", sweeps_api.SweepListCreate.as_view(), name="api-sweeps"),
    path("sweeps/<int:pk>/", sweeps_api.SweepDetail.as_view(), name="api-sweep"),
    path("sweeps/<int:pk>/stop/", sweeps_api.SweepStop.as_view(), name="api-sweep-stop"),
    path("sweeps/<int:pk>/promote/", sweeps_api.SweepPromote.as_view(), name="api-sweep-promote"),
]
