"""Google login, with only Google's HTTP endpoints faked (token exchange and userinfo).

Everything on our side runs for real: allauth's redirect with state and PKCE, the callback, the
code exchange over `requests`, the user lookup by verified email and the connection to the account.
"""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from allauth.socialaccount.models import SocialAccount
from django.test import override_settings

from accounts.adapters import SocialAccountAdapter
from accounts.models import User

CLIENT_ID = "buildx-test.apps.googleusercontent.com"
GOOGLE_APP = {
    "google": {
        "APPS": [{"client_id": CLIENT_ID, "secret": "test-secret", "key": ""}],
        "SCOPE": ["profile", "email"],
        "AUTH_PARAMS": {"access_type": "online"},
        "OAUTH_PKCE_ENABLED": True,
    }
}
GOOGLE_SUB = "109876543210987654321"


class FakeGoogle(requests.adapters.BaseAdapter):
    """Answers as oauth2.googleapis.com/token and www.googleapis.com/oauth2/v2/userinfo do."""

    def __init__(self, *, email: str, with_id_token: bool, verified: bool = True) -> None:
        super().__init__()
        self.email = email
        self.verified = verified
        self.with_id_token = with_id_token
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        self.requests.append(request)
        url = urlsplit(request.url)
        if request.method == "POST" and url.netloc == "oauth2.googleapis.com" and url.path == "/token":
            body = {
                "access_token": "ya29.fake-access",
                "expires_in": 3599,
                "token_type": "Bearer",
                "scope": "openid profile email",
            }
            if self.with_id_token:
                now = int(time.time())
                claims = {
                    "iss": "https://accounts.google.com",
                    "aud": CLIENT_ID,
                    "sub": GOOGLE_SUB,
                    "email": self.email,
                    "email_verified": self.verified,
                    "name": "Alice Kim",
                    "iat": now,
                    "exp": now + 3600,
                }
                # Google signs it with RS256; allauth trusts an id_token it fetched itself over TLS.
                body["id_token"] = jwt.encode(
                    claims, "not-googles-key-but-long-enough-for-hs256", algorithm="HS256"
                )
            return self.respond(request, 200, body)
        if (
            request.method == "GET"
            and url.netloc == "www.googleapis.com"
            and url.path == "/oauth2/v2/userinfo"
        ):
            assert request.headers["Authorization"] == "Bearer ya29.fake-access"
            return self.respond(
                request,
                200,
                {
                    "id": GOOGLE_SUB,
                    "email": self.email,
                    "verified_email": self.verified,
                    "name": "Alice Kim",
                    "given_name": "Alice",
                },
            )
        return self.respond(request, 404, {"error": "not_found"})

    @staticmethod
    def respond(request, status: int, body: dict) -> requests.Response:
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
        response.url = request.url
        response.request = request
        return response

    def close(self) -> None:
        pass


@pytest.fixture
def fake_google(monkeypatch):
    def install(*, email: str, with_id_token: bool, verified: bool = True) -> FakeGoogle:
        google = FakeGoogle(email=email, with_id_token=with_id_token, verified=verified)
        original = SocialAccountAdapter.get_requests_session

        def get_requests_session(self):
            session = original(self)
            session.mount("https://oauth2.googleapis.com/", google)
            session.mount("https://www.googleapis.com/", google)
            return session

        monkeypatch.setattr(SocialAccountAdapter, "get_requests_session", get_requests_session)
        return google

    return install


def google_round_trip(client) -> tuple:
    """Press "Continue with Google", then come back from Google with a code, as a browser would."""
    response = client.post("/accounts/google/login/?process=login")
    assert response.status_code == 302
    authorize = urlsplit(response["Location"])
    assert authorize.netloc == "accounts.google.com"
    params = parse_qs(authorize.query)
    assert params["client_id"] == [CLIENT_ID]
    assert params["code_challenge_method"] == ["S256"]
    callback = client.get(
        "/accounts/google/login/callback/", {"code": "4/fake-code", "state": params["state"][0]}
    )
    return callback, params


@pytest.mark.django_db
@pytest.mark.parametrize("with_id_token", [False, True], ids=["userinfo", "id_token"])
@override_settings(SOCIALACCOUNT_PROVIDERS=GOOGLE_APP)
def test_google_login_with_a_verified_email_connects_to_the_existing_account(
    client, alice, fake_google, with_id_token
):
    google = fake_google(email="alice@example.com", with_id_token=with_id_token)
    users_before = User.objects.count()

    callback, params = google_round_trip(client)

    assert callback.status_code == 302
    assert callback["Location"] == "/dashboard/"
    account = SocialAccount.objects.get(provider="google", uid=GOOGLE_SUB)
    assert account.user == alice
    assert User.objects.count() == users_before
    assert client.get("/api/v1/me/").json()["email"] == "alice@example.com"

    # The code went back to Google with our secret and the PKCE verifier.
    token_request = google.requests[0]
    form = parse_qs(token_request.body)
    assert form["code"] == ["4/fake-code"]
    assert form["client_secret"] == ["test-secret"]
    assert form["code_verifier"][0]
    assert len(google.requests) == (1 if with_id_token else 2)


@pytest.mark.django_db
@override_settings(SOCIALACCOUNT_PROVIDERS=GOOGLE_APP)
def test_google_login_with_a_new_email_creates_a_verified_account(client, fake_google):
    fake_google(email="frank@example.com", with_id_token=False)
    callback, _ = google_round_trip(client)
    assert callback.status_code == 302
    user = User.objects.get(email="frank@example.com")
    assert SocialAccount.objects.get(provider="google").user == user
    assert user.emailaddress_set.get().verified


@pytest.mark.django_db
@override_settings(SOCIALACCOUNT_PROVIDERS=GOOGLE_APP)
def test_an_unverified_google_email_does_not_take_over_the_existing_account(client, alice, fake_google):
    fake_google(email="alice@example.com", with_id_token=False, verified=False)
    callback, _ = google_round_trip(client)
    assert not SocialAccount.objects.filter(user=alice).exists()
    assert client.session.get("_auth_user_id") != str(alice.pk)
    # allauth asks for another email instead: this one is taken and Google did not vouch for it.
    assert callback["Location"] == "/accounts/3rdparty/signup/"
    page = client.get("/accounts/3rdparty/signup/")
    from buildx.tests.test_pages_csp import assert_csp_clean

    assert_csp_clean(page)
    assert User.objects.filter(email="alice@example.com").count() == 1


@pytest.mark.django_db
@override_settings(SOCIALACCOUNT_PROVIDERS=GOOGLE_APP)
def test_a_forged_state_is_refused(client, alice, fake_google):
    google = fake_google(email="alice@example.com", with_id_token=False)
    client.post("/accounts/google/login/?process=login")
    response = client.get("/accounts/google/login/callback/", {"code": "4/fake-code", "state": "forged"})
    assert response.status_code == 401
    assert "Third-Party Login Failure" in response.content.decode()
    assert google.requests == []
    assert not SocialAccount.objects.exists()


@pytest.mark.django_db
def test_the_google_button_shows_only_when_google_is_configured(client):
    assert "Continue with Google" not in client.get("/accounts/login/").content.decode()
    with override_settings(SOCIALACCOUNT_PROVIDERS=GOOGLE_APP):
        page = client.get("/accounts/login/").content.decode()
    assert "Continue with Google" in page
    assert 'action="/accounts/google/login/?process=login"' in page
