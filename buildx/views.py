from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes import views as contenttype_views
from django.core.exceptions import ValidationError
from django.db import connections
from django.http import Http404, HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache

from sandbox.launcher import host as sandbox_host


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("dashboard")
    return render(request, "home.html")


def favicon(request: HttpRequest) -> HttpResponse:
    """/favicon.ico, which browsers ask for whatever the page says: the site's icon. Resolved when asked,
    so that importing the URLs needs no static files manifest."""
    return HttpResponsePermanentRedirect(static("img/favicon.svg"))


def view_on_site(request: HttpRequest, content_type_id: str, object_id: str) -> HttpResponse:
    """The admin's "view on site" (/admin/r/<content type>/<id>/), with an id that is not one of the
    model's (a UUID model's "1": django_dramatiq's tasks) a 404 like any missing object, not a 500."""
    try:
        return contenttype_views.shortcut(request, content_type_id, object_id)
    except ValidationError:
        raise Http404(
            _("Content type %(ct_id)s object %(obj_id)s doesn’t exist")
            % {"ct_id": content_type_id, "obj_id": object_id}
        ) from None


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and answers HTTP; says nothing about its dependencies."""
    return JsonResponse({"status": "ok"})


def _check_database() -> dict:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True, "engine": connections["default"].vendor}
    except Exception as exc:  # any failure means "not ready"; the message says which
        return {"ok": False, "engine": connections["default"].vendor, "error": str(exc)[:200]}


def _check_redis(url: str) -> dict:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "error": str(exc)[:200]}


def _check_broker() -> dict:
    import dramatiq

    broker = dramatiq.get_broker()
    name = type(broker).__name__
    client = getattr(broker, "client", None)
    if client is None:
        return {"ok": True, "kind": name}
    try:
        client.ping()
        return {"ok": True, "kind": name}
    except Exception as exc:
        return {"ok": False, "kind": name, "error": str(exc)[:200]}


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve: the database, Redis and the broker answer. 503 with the failing part otherwise."""
    checks: dict[str, dict] = {"database": _check_database()}
    if settings.REDIS_URL:
        checks["redis"] = _check_redis(settings.REDIS_URL)
        checks["broker"] = _check_broker()
        embedded: list[str] = []
    else:
        checks["broker"] = _check_broker()
        embedded = ["channel layer (in-memory)", "worker (in-process)", "cache (local memory)"]
        if connections["default"].vendor == "sqlite":
            embedded.insert(0, "database (SQLite)")
    ready = all(check["ok"] for check in checks.values())
    body = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
        "embedded": embedded,
        # What a sandbox started by this process gets, and what it lacks (no control groups, no uid
        # pool): said here so that an operator sees it, not only in each run's isolation list.
        "sandbox": sandbox_host().summary(),
    }
    return JsonResponse(body, status=200 if ready else 503)
