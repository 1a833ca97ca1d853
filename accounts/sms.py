"""Sending text messages: one function, pluggable backends (``SMS_BACKEND``), as Django does for mail.

- ``console``: logs the text (the code shows in the server's log, as verification mail does);
- ``gateway``: posts it to an HTTP SMS gateway (``SMS_GATEWAY_URL``, ``SMS_GATEWAY_KEY``, ``SMS_SENDER``);
- ``locmem``: keeps it in ``outbox`` (tests read codes there, like ``django.core.mail.outbox``);
- or the dotted path of a class with ``send(message)``.

The gateway protocol (docs/contracts.md section 11; ``buildx.testing.sms_gateway`` speaks it in tests):
``POST <SMS_GATEWAY_URL>`` with ``Authorization: Bearer <key>`` and the JSON body
``{"to": "+821012345678", "from": "<sender>", "text": "..."}``; any 2xx is accepted (a JSON body's
``id`` is logged). 429, 5xx, timeouts and refused connections are tried again with exponential
backoff, up to ``SMS_GATEWAY_MAX_RETRIES`` times; another 4xx is final.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from django.conf import settings
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

BACKENDS = {
    "console": "accounts.sms.ConsoleBackend",
    "gateway": "accounts.sms.GatewayBackend",
    "locmem": "accounts.sms.LocmemBackend",
}

# Texts the locmem backend "sent", oldest first (tests empty it).
outbox: list[SMS] = []


@dataclass(frozen=True)
class SMS:
    to: str  # E.164
    text: str


class SMSDeliveryError(Exception):
    """The text could not be handed to the gateway; ``str()`` says why (for the log, not the user)."""


def send_sms(*, to: str, text: str) -> None:
    """Send one text now. Raises SMSDeliveryError when the backend gives up."""
    backend_class = import_string(BACKENDS.get(settings.SMS_BACKEND, settings.SMS_BACKEND))
    backend_class().send(SMS(to=to, text=text))


def mask(number: str) -> str:
    """A number for the log: country code and last two digits (``+82*******78``)."""
    number = str(number)
    return number[:3] + "*" * max(0, len(number) - 5) + number[-2:]


class ConsoleBackend:
    def send(self, message: SMS) -> None:
        # Development only: the code is in the log on purpose, so that no phone is needed.
        logger.warning("SMS to %s: %s", message.to, message.text)


class LocmemBackend:
    def send(self, message: SMS) -> None:
        outbox.append(message)


class GatewayBackend:
    def __init__(self) -> None:
        if not settings.SMS_GATEWAY_URL:
            raise SMSDeliveryError("SMS_BACKEND is 'gateway' but SMS_GATEWAY_URL is not set.")
        self.url = settings.SMS_GATEWAY_URL
        self.timeout = settings.SMS_GATEWAY_TIMEOUT_S
        self.max_retries = settings.SMS_GATEWAY_MAX_RETRIES
        self.backoff = settings.SMS_GATEWAY_BACKOFF_S

    def send(self, message: SMS) -> None:
        body = json.dumps({"to": message.to, "from": settings.SMS_SENDER, "text": message.text}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if settings.SMS_GATEWAY_KEY:
            headers["Authorization"] = f"Bearer {settings.SMS_GATEWAY_KEY}"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    answer = response.read(4096)
            except urllib.error.HTTPError as exc:
                exc.close()
                reason = f"the gateway answered {exc.code}"
                if exc.code != 429 and exc.code < 500:
                    raise SMSDeliveryError(f"{reason}; not retried") from None
            except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
                reason = f"no answer from the gateway ({exc})"
            else:
                logger.info("SMS to %s accepted by the gateway: %s", mask(message.to), _message_id(answer))
                return
            logger.warning("SMS to %s, attempt %d: %s", mask(message.to), attempt + 1, reason)
        raise SMSDeliveryError(f"{reason} after {self.max_retries + 1} attempts")


def _message_id(answer: bytes) -> str:
    try:
        return str(json.loads(answer).get("id", ""))
    except (ValueError, AttributeError):
        return ""
