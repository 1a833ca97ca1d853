"""Every login-related page renders inside our layout and obeys the Content-Security-Policy.

The CSP allows scripts and styles only from our own static files, so a page must not carry an
inline <script>, a <style> block, a style="" attribute or an on*="" handler: the browser would
refuse them and the page would break silently.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.test import override_settings

from accounts.tests.test_google_login import GOOGLE_APP


class InlineCodeFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.violations: list[str] = []
        self.script_srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script":
            if src := names.get("src"):
                self.script_srcs.append(src)
            else:
                self.violations.append(f"inline <script {attrs}>")
        if tag == "style":
            self.violations.append("<style> block")
        for name, value in attrs:
            if name == "style":
                self.violations.append(f"style attribute on <{tag}>")
            if name.startswith("on"):
                self.violations.append(f"{name} handler on <{tag}>")
            if name in {"href", "src", "action"} and (value or "").lower().startswith("javascript:"):
                self.violations.append(f"javascript: URL on <{tag}>")


def assert_csp_clean(response, *, our_layout: bool = True) -> None:
    assert response.status_code == 200, response.status_code
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "style-src 'self'" in policy
    assert "object-src 'none'" in policy
    assert response["X-Content-Type-Options"] == "nosniff"
    finder = InlineCodeFinder()
    body = response.content.decode()
    finder.feed(body)
    assert finder.violations == []
    assert all(src.startswith("/static/") or src.startswith("/api/") for src in finder.script_srcs)
    if our_layout:
        assert 'class="site-header"' in body
        assert "/static/js/site.js" in finder.script_srcs


ANONYMOUS_PAGES = [
    "/",
    "/accounts/login/",
    "/accounts/signup/",
    "/accounts/signup/?by=phone",
    "/accounts/login/code/",
    "/accounts/password/reset/",
    "/accounts/password/reset/done/",
    "/accounts/password/reset/key/1-set-password/",  # an invalid key: the "bad link" page
    "/accounts/confirm-email/",  # "we have sent you an email"
    "/accounts/confirm-email/not-a-real-key/",  # an invalid verification link
]

LOGGED_IN_PAGES = [
    "/dashboard/",
    "/accounts/logout/",
    "/accounts/email/",
    "/accounts/password/change/",
    "/accounts/phone/change/",
    "/accounts/3rdparty/",
]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ANONYMOUS_PAGES)
def test_anonymous_pages_have_no_inline_code(client, path):
    assert_csp_clean(client.get(path))


@pytest.mark.django_db
@pytest.mark.parametrize("path", LOGGED_IN_PAGES)
def test_account_pages_have_no_inline_code(alice_client, path):
    assert_csp_clean(alice_client.get(path))


@pytest.mark.django_db
@override_settings(SOCIALACCOUNT_PROVIDERS=GOOGLE_APP)
@pytest.mark.parametrize("path", ["/accounts/login/", "/accounts/signup/", "/accounts/google/login/"])
def test_google_pages_have_no_inline_code(client, path):
    assert_csp_clean(client.get(path))


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/docs/", "/api/auth/openapi.html"])
def test_api_docs_use_the_vendored_swagger_ui_without_inline_code(alice_client, path):
    response = alice_client.get(path)
    assert_csp_clean(response, our_layout=False)
    assert "/static/vendor/swagger-ui-5.35.0/swagger-ui-bundle.js" in response.content.decode()


@pytest.mark.django_db
def test_the_api_docs_start_up_script_is_served_as_javascript(alice_client):
    response = alice_client.get("/api/v1/docs/?script=")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/javascript")
    assert "/api/v1/schema/" in response.content.decode()


@pytest.mark.django_db
def test_the_openapi_schema_describes_the_api(alice_client):
    response = alice_client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert "/api/v1/me/" in response.json()["paths"]


@pytest.mark.django_db
def test_the_email_removal_confirmation_lives_in_a_data_attribute(alice_client):
    # allauth's page asks "really remove?" through an inline JSON script; ours through data-confirm,
    # which static/js/site.js turns into the question.
    body = alice_client.get("/accounts/email/").content.decode()
    assert 'name="action_remove"' in body
    assert 'data-confirm="Do you really want to remove the selected email address?"' in body


@pytest.mark.django_db
def test_security_headers_are_set(client):
    response = client.get("/accounts/login/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]


@pytest.mark.django_db
def test_too_many_sign_ups_get_our_429_page(client, settings):
    settings.ACCOUNT_RATE_LIMITS = {"signup": "1/m/ip"}
    data = {"email": "gina@example.com", "password1": "x", "password2": "y"}
    client.post("/accounts/signup/", data)
    response = client.post("/accounts/signup/", data)
    assert response.status_code == 429
    assert "Too many attempts" in response.content.decode()
    response.status_code = 200  # to reuse the layout and CSP check below
    assert_csp_clean(response)


@pytest.mark.django_db
def test_the_browsable_api_loads_its_scripts_from_static_files(alice_client):
    response = alice_client.get("/api/v1/me/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    finder = InlineCodeFinder()
    finder.feed(response.content.decode())
    assert finder.script_srcs and all(src.startswith("/static/rest_framework/") for src in finder.script_srcs)
    assert "alice@example.com" in response.content.decode()


@pytest.mark.django_db
def test_pages_may_connect_only_to_their_own_origin(alice_client):
    # A script injected into a page must not be able to open a socket (or fetch) to another host:
    # no bare ws: / wss: / https: schemes, only 'self' (which covers ws and wss of the same host).
    policy = alice_client.get("/dashboard/")["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    assert directives["connect-src"] == "'self'"


@pytest.mark.django_db
def test_the_code_pages_have_no_inline_code(client, alice, settings):
    from accounts import sms

    settings.SMS_BACKEND = "locmem"
    alice.phone_number = "+821011112222"
    alice.phone_verified = True
    alice.save()
    client.post("/accounts/login/code/", {"phone": "010-1111-2222"})
    assert_csp_clean(client.get("/accounts/login/code/confirm/"))
    sms.outbox.clear()
    signup = client.__class__()
    signup.post("/accounts/signup/?by=phone", {"phone": "010-5555-6666"})
    assert_csp_clean(signup.get("/accounts/phone/verify/"))
    sms.outbox.clear()
