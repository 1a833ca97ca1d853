"""A threaded HTTP server on a free local port, for the test stand-ins of services outside the machine
(the LLM API, the SMS gateway): start/stop, a context manager, and its origin."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LocalHTTPServer:
    name = "local-test-server"
    handler: type[BaseHTTPRequestHandler]  # set by the subclass; its handler reaches it as ``owner``

    _httpd: ThreadingHTTPServer | None = None

    def start(self) -> Self:
        handler = type("Handler", (self.handler,), {"owner": self})  # one class per server
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # Handlers still sleeping for a scripted delay must not keep the process alive.
        self._httpd.daemon_threads = True
        # A short poll interval makes stop() quick (shutdown waits for the next poll).
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server."""
        assert self._httpd is not None, f"start() the {self.name} first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"
