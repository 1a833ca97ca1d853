"""Run the whole platform in one command: Daphne (HTTP + WebSockets) and the Dramatiq worker.

Embedded mode (no REDIS_URL): the worker runs as threads of this process, because the in-memory
channel layer and the stub broker exist only inside one process. With REDIS_URL set, the worker is a
separate `manage.py rundramatiq` process, as in production.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand

from designs.apps import start_validation_warm_up


def import_actor_modules() -> None:
    for app_config in apps.get_app_configs():
        module = f"{app_config.name}.actors"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def start_embedded_worker():
    import dramatiq

    import_actor_modules()
    worker = dramatiq.Worker(dramatiq.get_broker(), worker_threads=settings.EMBEDDED_WORKER_THREADS)
    worker.start()
    return worker


class Command(BaseCommand):
    help = "Run BuildX: Daphne for HTTP and WebSockets plus the Dramatiq worker."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-worker", action="store_true", help="Serve pages only.")

    def handle(self, *args, host: str, port: int, no_worker: bool, **options) -> None:
        from channels.routing import get_default_application
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        worker = child = None
        # Until Daphne takes SIGINT and SIGTERM over, either one stops the start-up through the `finally`
        # below (a Ctrl+C while the worker boots must not leave it running on its own). SIGINT is set too,
        # not inherited: a command started in the background by a script (`make run &`, a CI job) inherits
        # SIGINT ignored, so Python installs no KeyboardInterrupt, Twisted then leaves SIGINT alone, and
        # Ctrl+C or `kill -INT` did nothing at all: serve and its worker ran on.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            if not no_worker:
                if settings.EMBEDDED:
                    worker = start_embedded_worker()
                    self.stdout.write("Embedded mode: in-process worker, in-memory channel layer.")
                else:
                    # A process group of its own: the stop below reaches the worker processes rundramatiq
                    # forks, not only rundramatiq (Ctrl+C reaches this process, which stops the group).
                    child = subprocess.Popen(
                        [sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--threads", "2"],
                        cwd=settings.BASE_DIR,
                        start_new_session=True,
                    )
                    self.stdout.write(f"Worker process started (pid {child.pid}).")

            application = get_default_application()
            # A server, DEBUG or not: the editor's first check must not wait for torch (designs/apps.py).
            start_validation_warm_up(serving=True)
            if settings.DEBUG:
                # django-stubs types the wrapped app as Django's ASGIHandler; it wraps any ASGI app
                # (daphne's runserver wraps Channels' router the same way).
                application = ASGIStaticFilesHandler(application)  # type: ignore[arg-type,assignment]
            self.stdout.write(f"BuildX is running at http://{host}:{port}/  (Ctrl+C stops it)")
            Server(
                application=application,
                endpoints=build_endpoint_description_strings(host=host, port=port),
                websocket_timeout=24 * 3600,
                # As the daphne command line sets it (Server's own default is 5 s): a class of browsers
                # opening their run pages at once must not be dropped while their handshakes queue.
                websocket_handshake_timeout=20,
                application_close_timeout=10,
            ).run()
        except KeyboardInterrupt:  # stopped during the start-up: as a stop afterwards
            self.stdout.write("Stopped during start-up.")
        finally:
            if worker is not None:
                worker.stop(timeout=5000)
            if child is not None:
                stop_worker_group(child)


def stop_worker_group(child: subprocess.Popen, grace_s: float = 20) -> None:
    """Stop the worker and every process it started: SIGTERM to its group (Dramatiq finishes what it can),
    then SIGKILL to the group after `grace_s`. Killing only rundramatiq after the grace orphaned its worker
    processes, which then ran on (and kept the server's output open) after `make run` ended."""
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except ProcessLookupError:  # the whole group is gone already
        child.wait()
        return
    try:
        child.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(child.pid, signal.SIGKILL)  # whatever is left of the group, rundramatiq's forks included
    except ProcessLookupError:
        pass
    child.wait()
