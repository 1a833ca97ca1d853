"""The signed-in user of a request, typed."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from accounts.models import User


def signed_in_user(request: HttpRequest) -> User:
    """``request.user`` where only a signed-in user gets this far: behind ``login_required``, the API's
    ``IsAuthenticated`` default and the admin site. They make the check; the type checker cannot see
    them, so this says it again (a 403 if a view ever loses its decorator) and returns a ``User``."""
    user = request.user
    if not isinstance(user, User):
        raise PermissionDenied
    return user
