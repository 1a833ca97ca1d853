from __future__ import annotations

from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts import views as account_views
from buildx import views
from buildx.api import ApiRoot, not_found
from buildx.metrics import metrics_view
from training import health

# The admin has no login form of its own: it sends people to the site login, which carries
# allauth's rate limits (and, later, any second factor), so the admin is no softer target.
# allauth's documented way; mypy sees a method replaced on one instance, which is the point.
admin.site.login = secure_admin_login(admin.site.login)  # type: ignore[method-assign]

# The API lives under /api/v1/; each app adds its routes in its own api_urls.py.
api_v1: list[URLPattern | URLResolver] = [
    path("", include("accounts.api_urls")),
    path("", include("library.api_urls")),
    path("", include("designs.api_urls")),
    path("", include("training.api_urls")),
    path("", include("feedback.api_urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its start-up script from a URL of its own: no inline script.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    # Last: a path that names no endpoint gets the API's JSON 404, not an HTML page.
    re_path(r"^(?P<path>[\s\S]*)$", not_found),  # newlines too,
]
# The browsable front page (JSON for API clients): every route above by name.
api_v1.insert(0, path("", ApiRoot.as_view(routes=api_v1), name="api-root"))

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    # Browsers ask for /favicon.ico whatever the page says (the API's JSON, a file download).
    path("favicon.ico", views.favicon, name="favicon"),
    path("readyz", views.readyz, name="readyz"),
    # For Prometheus: a bearer token or an allowed network (buildx/metrics.py); nginx does not route it.
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include(api_v1)),
    path("api/auth/", include("allauth.headless.urls")),
    # Before Django's own: also remembers the choice on the logged-in user's account.
    path("i18n/setlang/", account_views.set_language, name="set_language"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("", views.home, name="home"),
    path("accounts/", include("allauth.urls")),
    # Before the admin's own: workers, queues and recent failures for superusers (training/health.py).
    path("admin/health/", health.admin_health, name="admin-health"),
    # Before the admin's own route of the same path, behind the same staff check.
    path(
        "admin/r/<path:content_type_id>/<path:object_id>/",
        admin.site.admin_view(views.view_on_site),
        name="admin-view-on-site",
    ),
    path("admin/", admin.site.urls),
    path("", include("accounts.urls")),
    path("", include("library.urls")),
    path("", include("designs.urls")),
    path("", include("training.urls")),
    path("", include("feedback.urls")),
]

# MEDIA_ROOT is never served as such, not even with DEBUG: run files are private and go out only
# through the views that check who asks (training/api.py, training/services/artifacts.py).
