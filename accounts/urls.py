from __future__ import annotations

from django.urls import path

from accounts import views

urlpatterns = [
    path("courses/", views.course_list, name="courses"),
    path("courses/join/", views.course_join, name="course_join"),
    path("courses/<int:pk>/", views.course_detail, name="course_detail"),
    path("courses/<int:pk>/rotate-code/", views.course_rotate_code, name="course_rotate_code"),
    path(
        "courses/<int:pk>/students/<int:user_id>/remove/",
        views.course_remove_student,
        name="course_remove_student",
    ),
]
