"""A new user on a phone, in Korean: signs up with a phone number, logs out, logs back in with a code.

Real chromium at 390×844 against a real server; the texts go through the HTTP gateway backend to a
local gateway (buildx.testing.sms_gateway), where the test reads each code as the phone would.
"""

from __future__ import annotations

import pytest

from buildx.testing.browser import CHROMIUM, CHROMIUM_ARGS

PHONE = "+821055556666"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_hana_signs_up_and_logs_in_with_her_phone_in_korean(live_server, sms_gateway):
    from playwright.sync_api import expect, sync_playwright

    base = live_server.url
    # No ORM below: Playwright's sync API runs an event loop in this thread.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 390, "height": 844}, locale="ko-KR", is_mobile=True, has_touch=True
            )
            page = context.new_page()
            problems: list[str] = []
            page.on("console", lambda msg: msg.type == "error" and problems.append(msg.text))
            page.on(
                "response",
                lambda r: r.status >= 400 and not r.url.endswith("/favicon.ico") and problems.append(r.url),
            )

            def fits_the_screen() -> None:
                assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), page.url

            # Sign up: the number, a name, then the code that came by text.
            page.goto(f"{base}/accounts/signup/")
            page.click("text=전화번호로 회원가입")
            expect(page.locator("h1")).to_have_text("전화번호로 회원가입")
            expect(page.locator("#id_phone")).to_have_attribute("type", "tel")
            fits_the_screen()
            page.fill("#id_phone", "010-5555-6666")
            page.fill("#id_first_name", "하나")
            page.click("button:text('코드 받기')")
            expect(page).to_have_url(f"{base}/accounts/phone/verify/")
            expect(page.locator("h1")).to_contain_text("전화번호 인증 코드 입력")
            expect(page.locator("main")).to_contain_text("010-5555-6666")
            fits_the_screen()
            page.fill("#id_code", sms_gateway.last_code_for(PHONE))
            page.click("button:text('확인')")
            expect(page).to_have_url(f"{base}/dashboard/")
            expect(page.locator(".nav-user")).to_have_text("하나")

            # The account's phone page: verified.
            page.goto(f"{base}/accounts/phone/change/")
            expect(page.locator("#current-phone")).to_contain_text("010-5555-6666")
            expect(page.locator("#current-phone")).to_contain_text("인증됨")
            fits_the_screen()

            # Log out, then back in with a new code.
            page.click("button:text('로그아웃')")
            page.goto(f"{base}/accounts/login/")
            page.click("#phone-login")
            expect(page.locator("h1")).to_have_text("전화번호로 로그인")
            page.fill("#id_phone", "01055556666")
            page.click("button:text('코드 받기')")
            expect(page).to_have_url(f"{base}/accounts/login/code/confirm/")
            expect(page.locator("h1")).to_contain_text("로그인 코드 입력")
            # A wrong code first: refused, in Korean.
            page.fill("#id_code", "000000" if sms_gateway.last_code_for(PHONE) != "000000" else "111111")
            page.click("button:text('확인')")
            expect(page.locator("main")).to_contain_text("올바르지 않은 코드")
            page.fill("#id_code", sms_gateway.last_code_for(PHONE))
            page.click("button:text('확인')")
            expect(page).to_have_url(f"{base}/dashboard/")
            expect(page.locator(".nav-user")).to_have_text("하나")

            assert [m["to"] for m in sms_gateway.messages] == [PHONE, PHONE]
            assert all("BuildX 인증 코드" in m["text"] for m in sms_gateway.messages)
            assert problems == []
        finally:
            browser.close()
