from __future__ import annotations

from django.urls import path

from training import generate_views, predict_views, sweep_views, views

urlpatterns = [
    path("dashboard/", views.dashboard, name="dashboard"),
    path("runs/", views.run_list, name="run-list"),
    path("runs/start/", views.run_start, name="run-start"),
    path("runs/compare/", views.run_compare, name="run-compare"),
    path("runs/<int:pk>/", views.run_detail, name="run-detail"),
    path("runs/<int:pk>/stop/", views.run_stop, name="run-stop"),
    path("runs/<int:pk>/resume/", views.run_resume, name="run-resume"),
    path("runs/<int:pk>/archive/", views.run_archive, name="run-archive"),
    path("runs/<int:pk>/label/", views.run_label, name="run-label"),
    path("runs/<int:pk>/delete/", views.run_delete, name="run-delete"),
    path("runs/<int:pk>/predict/", predict_views.predict_page, name="run-predict"),
    path("runs/<int:pk>/generate/", generate_views.generate_page, name="run-generate"),
    path("runs/<int:pk>/card/", predict_views.model_card_page, name="run-card"),
    # Sweeps (issue 17).
    path("designs/<int:pk>/variations/", sweep_views.sweep_new, name="sweep-new"),
    path("sweeps/<int:pk>/", sweep_views.sweep_detail, name="sweep-detail"),
    path("sweeps/<int:pk>/stop/", sweep_views.sweep_stop, name="sweep-stop"),
    path("sweeps/<int:pk>/promote/", sweep_views.sweep_promote, name="sweep-promote"),
]
