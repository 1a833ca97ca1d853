"""The SMS backends: the gateway one against a local server that speaks its protocol."""

from __future__ import annotations

import logging

import pytest

from accounts import sms
from buildx.testing.sms_gateway import Answer


def test_the_gateway_backend_posts_the_text_with_the_key(sms_gateway):
    sms.send_sms(to="+821012345678", text="BuildX code: 123456.")
    assert sms_gateway.messages == [{"to": "+821012345678", "from": "BuildX", "text": "BuildX code: 123456."}]
    assert sms_gateway.requests[0]["authorization"] == "Bearer sms-test-key"


def test_the_gateway_backend_retries_a_503(sms_gateway):
    sms_gateway.script(Answer(status=503))
    sms.send_sms(to="+821012345678", text="BuildX code: 123456.")
    assert len(sms_gateway.requests) == 2
    assert len(sms_gateway.messages) == 1


def test_the_gateway_backend_retries_a_timeout(sms_gateway, settings):
    # The first answer comes long after the client's timeout; the retry gets a prompt one. (Counts, not
    # timings: a loaded machine may time out once more, which the retries absorb.)
    settings.SMS_GATEWAY_TIMEOUT_S = 1.0
    sms_gateway.script(Answer(delay_s=6.0))
    sms.send_sms(to="+821012345678", text="BuildX code: 123456.")
    assert len(sms_gateway.requests) >= 2


def test_the_gateway_backend_gives_up_after_its_retries(sms_gateway):
    sms_gateway.script(Answer(status=502), Answer(status=503), Answer(status=500))
    with pytest.raises(sms.SMSDeliveryError, match="answered 500 after 3 attempts"):
        sms.send_sms(to="+821012345678", text="x")
    assert len(sms_gateway.requests) == 3
    assert sms_gateway.messages == []


def test_the_gateway_backend_does_not_retry_a_refusal(sms_gateway, settings):
    settings.SMS_GATEWAY_KEY = "wrong-key"
    with pytest.raises(sms.SMSDeliveryError, match="401; not retried"):
        sms.send_sms(to="+821012345678", text="x")
    assert len(sms_gateway.requests) == 1


def test_an_unreachable_gateway_is_a_delivery_error(settings):
    settings.SMS_BACKEND = "gateway"
    settings.SMS_GATEWAY_URL = "http://127.0.0.1:9/v1/messages"  # the discard port: nothing listens
    settings.SMS_GATEWAY_MAX_RETRIES = 1
    settings.SMS_GATEWAY_BACKOFF_S = 0.01
    with pytest.raises(sms.SMSDeliveryError, match="no answer from the gateway"):
        sms.send_sms(to="+821012345678", text="x")


def test_the_console_backend_logs_the_code(settings, caplog):
    settings.SMS_BACKEND = "console"
    with caplog.at_level(logging.WARNING, logger="accounts.sms"):
        sms.send_sms(to="+821012345678", text="BuildX code: 654321.")
    assert "BuildX code: 654321." in caplog.text


@pytest.mark.django_db
def test_a_login_code_goes_through_the_gateway_and_logs_in(client, sms_gateway, alice):
    alice.phone_number = "+821011112222"
    alice.phone_verified = True
    alice.save()
    sms_gateway.script(Answer(status=503))  # the first try fails; the retry delivers
    response = client.post("/accounts/login/code/", {"phone": "010-1111-2222"})
    assert response.status_code == 302
    code = sms_gateway.last_code_for("+821011112222")
    response = client.post("/accounts/login/code/confirm/", {"code": code})
    assert response["Location"] == "/dashboard/"


@pytest.mark.django_db
def test_a_gateway_that_stays_down_is_said_on_the_page(client, sms_gateway, alice):
    alice.phone_number = "+821011112222"
    alice.phone_verified = True
    alice.save()
    sms_gateway.script(*[Answer(status=503)] * 3)
    response = client.post("/accounts/login/code/", {"phone": "010-1111-2222"}, follow=True)
    assert response.status_code == 200
    assert "We could not send the text message. Try again in a minute." in response.content.decode()
