"""A local OpenAI-compatible server that answers from a script, for tests and benches.

The real ``openai`` client talks to it over HTTP, so tests exercise exactly the code that runs in
production: only the model is replaced. It speaks ``POST /v1/chat/completions`` (non-streaming) and
``GET /v1/models``.

    server = OpenAIServer().start()
    server.script(Reply(status=429, headers={"Retry-After": "0.1"}), Reply(content="Hello"))
    ...  # point OPENAI_BASE_URL at server.base_url
    server.requests  # what the client sent, in order
    server.stop()

Each request takes the next scripted reply; an empty script answers with ``default`` (a Reply, or a
callable taking the request body and returning one), or a 500 that says the script ran out.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from buildx.testing.local_http import LocalHTTPServer


@dataclass
class Reply:
    """One scripted answer. ``status`` other than 200 answers with an OpenAI-style error body."""

    content: str = ""
    status: int = 200
    delay_s: float = 0.0  # sleep before answering (longer than the client's timeout = a timeout)
    headers: dict[str, str] = field(default_factory=dict)
    tokens_in: int | None = None  # None: estimated from the request (about 4 characters a token)
    tokens_out: int | None = None
    finish_reason: str = "stop"
    body: Any = None  # sent as is instead of the usual JSON, for malformed answers


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict
    at: float  # time.monotonic() on arrival

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages", [])


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


Responder = Callable[[dict], Reply]


class OpenAIServer(LocalHTTPServer):
    name = "openai-test-server"

    def __init__(self, *, api_key: str | None = None, default: Reply | Responder | None = None) -> None:
        # With api_key set, a request without "Authorization: Bearer <api_key>" gets a 401.
        self.api_key = api_key
        self.default = default
        self.requests: list[ReceivedRequest] = []
        self._replies: deque[Reply | Responder] = deque()
        self._lock = threading.Lock()
        self.handler = _Handler

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    # --- script --------------------------------------------------------------------------------

    def script(self, *replies: Reply | Responder | str) -> None:
        """Queue replies; a plain string is a 200 answer with that content."""
        with self._lock:
            for reply in replies:
                self._replies.append(Reply(content=reply) if isinstance(reply, str) else reply)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._replies)

    @property
    def chat_requests(self) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def _next_reply(self, body: dict) -> Reply:
        with self._lock:
            item = self._replies.popleft() if self._replies else self.default
        if item is None:
            return Reply(status=500, content="The test server's script has no reply left for this request.")
        return item(body) if callable(item) else item


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass  # keep test output clean

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a scripted timeout): nothing to answer

    def _record(self, body: dict) -> None:
        request = ReceivedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            at=time.monotonic(),
        )
        with self.owner._lock:
            self.owner.requests.append(request)

    def _authorised(self) -> bool:
        if self.owner.api_key is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {self.owner.api_key}":
            return True
        self._send_json(401, _error_body(401, "Incorrect API key provided."))
        return False

    def do_GET(self) -> None:
        self._record({})
        if not self._authorised():
            return
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]})
        else:
            self._send_json(404, _error_body(404, f"No route for GET {self.path}"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"_raw": raw.decode(errors="replace")}
        self._record(body)
        if not self._authorised():
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, _error_body(404, f"No route for POST {self.path}"))
            return
        if body.get("stream"):
            self._send_json(400, _error_body(400, "This test server does not stream."))
            return

        reply = self.owner._next_reply(body)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.body is not None:
            payload = reply.body if isinstance(reply.body, (bytes, dict, list)) else str(reply.body).encode()
            self._send_json(reply.status, payload, reply.headers)
            return
        if reply.status != 200:
            self._send_json(reply.status, _error_body(reply.status, reply.content), reply.headers)
            return

        prompt = "".join(str(m.get("content", "")) for m in body.get("messages", []))
        tokens_in = reply.tokens_in if reply.tokens_in is not None else estimate_tokens(prompt)
        tokens_out = reply.tokens_out if reply.tokens_out is not None else estimate_tokens(reply.content)
        with self.owner._lock:
            number = len(self.owner.requests)
        self._send_json(
            200,
            {
                "id": f"chatcmpl-test-{number}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "test-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.content},
                        "finish_reason": reply.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": tokens_in,
                    "completion_tokens": tokens_out,
                    "total_tokens": tokens_in + tokens_out,
                },
            },
            reply.headers,
        )


def _error_body(status: int, message: str) -> dict:
    kinds = {401: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_exceeded"}
    return {
        "error": {"message": message, "type": kinds.get(status, "server_error"), "param": None, "code": None}
    }
