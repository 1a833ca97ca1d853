"""A local SMS gateway that speaks BuildX's gateway protocol (accounts/sms.py), for tests.

    with SMSGateway(api_key="k") as gateway:
        gateway.script(Answer(status=503))   # the next request fails once, then the default (202) answers
        ... point SMS_GATEWAY_URL at gateway.url ...
        gateway.messages   # what was accepted: [{"to": "+8210...", "from": "BuildX", "text": "..."}]
        gateway.last_code_for("+821012345678")

Every request is recorded in ``requests`` (accepted or not); ``messages`` holds the accepted ones.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from buildx.testing.local_http import LocalHTTPServer

CODE = re.compile(r"\b(\d{6})\b")


@dataclass
class Answer:
    status: int = 202
    delay_s: float = 0.0  # longer than the client's timeout = a timeout


class SMSGateway(LocalHTTPServer):
    name = "sms-gateway"

    def __init__(self, *, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self._answers: deque[Answer] = deque()
        self._lock = threading.Lock()
        self.handler = _Handler

    @property
    def url(self) -> str:
        return f"{self.origin}/v1/messages"

    def script(self, *answers: Answer) -> None:
        with self._lock:
            self._answers.extend(answers)

    def last_code_for(self, number: str) -> str:
        with self._lock:
            texts = [m["text"] for m in self.messages if m.get("to") == number]
        assert texts, f"no text was sent to {number}"
        match = CODE.search(texts[-1])
        assert match, texts[-1]
        return match.group(1)

    def _next(self) -> Answer:
        with self._lock:
            return self._answers.popleft() if self._answers else Answer()


class _Handler(BaseHTTPRequestHandler):
    owner: SMSGateway
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass

    def _answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            body = {}
        record = {"path": self.path, "authorization": self.headers.get("Authorization"), "body": body}
        with self.owner._lock:
            self.owner.requests.append(record)
        if self.path != "/v1/messages":
            self._answer(404, {"error": "not_found"})
            return
        if (
            self.owner.api_key is not None
            and self.headers.get("Authorization") != f"Bearer {self.owner.api_key}"
        ):
            self._answer(401, {"error": "bad_key"})
            return
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str) for k in ("to", "from", "text")
        ):
            self._answer(400, {"error": "to, from and text are required"})
            return
        answer = self.owner._next()
        if answer.delay_s:
            time.sleep(answer.delay_s)
        if answer.status >= 300:
            self._answer(answer.status, {"error": "scripted failure"})
            return
        with self.owner._lock:
            self.owner.messages.append(body)
            number = len(self.owner.messages)
        self._answer(answer.status, {"id": f"msg-{number}", "status": "queued"})
