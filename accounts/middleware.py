from __future__ import annotations

from allauth.core.exceptions import RateLimited
from allauth.core.ratelimit import respond_429
from django.http import HttpRequest, HttpResponse


class RateLimitedAs429:
    """A rate limit that allauth raises where its view does not catch it answers 429, not 500.

    allauth 65.21 raises RateLimited out of a phone verification started from the account page (and
    its API twin), and our SMS limit raises it from any flow that sends a text. The answer is allauth's
    own: the 429 page, or the API's 429 JSON.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, RateLimited):
            return respond_429(request)
        return None
