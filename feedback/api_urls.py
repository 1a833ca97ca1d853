from __future__ import annotations

from django.urls import path

from feedback import api

urlpatterns = [
    path("runs/<int:pk>/feedback/", api.RunFeedback.as_view(), name="api-run-feedback"),
    path("runs/<int:pk>/feedback/apply/", api.RunFeedbackApply.as_view(), name="api-run-feedback-apply"),
    path("runs/<int:pk>/feedback/try/", api.RunFeedbackTry.as_view(), name="api-run-feedback-try"),
    path("runs/<int:pk>/feedback/rate/", api.RunFeedbackRate.as_view(), name="api-run-feedback-rate"),
]
