"""English and Korean: the browser's language, the switcher, and the account's remembered choice."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client

from buildx.test import PASSWORD


@pytest.mark.django_db
def test_the_home_page_is_english_by_default(client):
    body = client.get("/").content.decode()
    assert '<html lang="en">' in body
    assert "Build your first neural network" in body


@pytest.mark.django_db
def test_a_korean_browser_gets_the_korean_page(client):
    body = client.get("/", HTTP_ACCEPT_LANGUAGE="ko-KR,ko;q=0.9").content.decode()
    assert '<html lang="ko">' in body
    assert "나의 첫 신경망 만들기" in body
    assert "회원가입" in body
    assert "Build your first neural network" not in body


@pytest.mark.django_db
def test_the_login_page_is_korean_too_including_allauths_own_words(client):
    body = client.get("/accounts/login/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "로그인" in body
    assert "Sign In" not in body


@pytest.mark.django_db
def test_the_language_switcher_turns_the_site_korean(client):
    response = client.post("/i18n/setlang/", {"language": "ko", "next": "/"})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.cookies[settings.LANGUAGE_COOKIE_NAME].value == "ko"
    assert "나의 첫 신경망 만들기" in client.get("/").content.decode()


@pytest.mark.django_db
def test_the_switcher_remembers_alices_choice_for_her_next_login_elsewhere(alice_client, alice):
    alice_client.post("/i18n/setlang/", {"language": "ko", "next": "/dashboard/"})
    alice.refresh_from_db()
    assert alice.preferred_language == "ko"

    other_browser = Client()
    response = other_browser.post("/accounts/login/", {"login": "alice@example.com", "password": PASSWORD})
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "ko"
    assert "대시보드" in other_browser.get("/dashboard/").content.decode()
    assert other_browser.get("/api/v1/me/").json()["language"] == "ko"


@pytest.mark.django_db
def test_the_switcher_ignores_an_unknown_language(alice_client, alice):
    alice_client.post("/i18n/setlang/", {"language": "xx", "next": "/"})
    alice.refresh_from_db()
    assert alice.preferred_language == ""


@pytest.mark.django_db
def test_api_errors_speak_korean_to_a_korean_client(client):
    response = client.get("/api/v1/me/", HTTP_ACCEPT_LANGUAGE="ko")
    assert response.status_code == 401
    assert response.json()["error"]["message"] != "Authentication credentials were not provided."


def po_entries(path) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a .po file, without the header and plural entries."""
    import re

    def text(block: str) -> str:
        return (
            "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', block))
            .encode()
            .decode("unicode_escape")
            .encode("latin-1")
            .decode()
        )

    entries = []
    for chunk in path.read_text(encoding="utf-8").split("\n\n"):
        if "msgid_plural" in chunk or chunk.lstrip().startswith("#~"):
            continue
        match = re.search(r'^msgid ((?:".*"\n)+)msgstr ((?:".*"\n?)+)', chunk, re.M)
        if match and text(match.group(1)):
            entries.append((text(match.group(1)), text(match.group(2))))
    return entries


def test_every_korean_string_is_translated_and_compiled():
    from pathlib import Path

    from django.utils import translation

    entries = po_entries(Path(settings.BASE_DIR) / "locale" / "ko" / "LC_MESSAGES" / "django.po")
    assert len(entries) > 40
    untranslated = [msgid for msgid, msgstr in entries if not msgstr]
    assert not untranslated, "translate these in locale/ko/LC_MESSAGES/django.po"
    with translation.override("ko"):
        stale = [msgid for msgid, msgstr in entries if translation.gettext(msgid) != msgstr]
    assert not stale, "run `python manage.py compilemessages -l ko` and commit django.mo"
