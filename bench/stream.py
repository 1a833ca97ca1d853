"""Live-stream benchmark: N WebSocket clients watching M training runs through Daphne and Redis.

    DATABASE_URL=postgres://... REDIS_URL=redis://.../N python bench/stream.py --clients 500 --runs 1

It starts Daphne (`manage.py serve --no-worker`) and one `rundramatiq` worker (one thread per run),
creates M bench users each with a hand-written digits script that prints a line every few batches,
and measures:

- POST /api/v1/runs/ -> the first `run.status: running` at a WebSocket client, on an idle worker;
- for every `run.log` event a client receives live, the latency from the moment the worker read the
  line from the training child's pipe (the event's "t"; the child writes unbuffered, so this is the
  line leaving the script to within the pipe's latency) to its arrival at the client: p50, p99, max;
- per client, events missing from or repeated in its stream compared with the stored stream.

The runs are stopped after --duration seconds and every client must then reach `run.done`.
`--client websockets` measures with the `websockets` library's client instead of the bench's own
protocol code. Everything it creates is deleted at the end. Figures depend on the machine: say how loaded it was.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

from websockets.asyncio.client import connect as websockets_connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buildx.settings")
# The bench's own bookkeeping reads the database from its event loop; nothing else runs there.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402

from designs.models import CodeArtifact  # noqa: E402
from training.models import Run, RunEvent  # noqa: E402

BENCH_LINE_EVERY = 4  # batches between printed lines: about 25 lines a second per run on an idle core
BENCH_EPOCHS = 100000  # longer than any measurement: the bench stops the run
# Passes over the digits per reported epoch: an idle core trains a pass in well under 0.1 s, and an epoch
# report and a checkpoint per pass outran the sandbox's 20 events a second (the run was stopped mid-bench).
BENCH_PASSES = 5

BENCH_SCRIPT = (
    '''"""Bench: the digits with a line printed every few batches."""

from __future__ import annotations

import torch
from torch import nn

import buildx_runtime as rt

DATASET = "digits"
INPUT_SHAPE = (1, 8, 8)
NUM_CLASSES = 10
EVAL_TRANSFORM = rt.Compose([rt.Normalize((0.5,), (0.5,))])
EPOCHS = BENCH_EPOCHS  # longer than any measurement: the bench stops the run
BATCH_SIZE = 32
LEARNING_RATE = 0.01
SEED = 42
VAL_SPLIT = 0.1


class Bench(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(kernel_size=2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(self.flatten(self.pool1(self.relu1(self.conv1(x)))))


def build_model() -> nn.Module:
    return Bench()


def train(model: nn.Module, data: rt.Data) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    start_epoch = rt.resume(model=model, optimizer=optimizer)
    for epoch in range(start_epoch + 1, EPOCHS + 1):
        model.train()
        n = 0
        for _ in range(PASSES):
            for x, y in data.train.batches(BATCH_SIZE, shuffle=True, transform=EVAL_TRANSFORM):
                loss = loss_fn(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n += 1
                if n % EVERY == 0:
                    print("bench epoch", epoch, "batch", n, "loss", round(loss.item(), 4))
        val_loss, val_acc = rt.evaluate(model, data.val, loss_fn=loss_fn, batch_size=BATCH_SIZE, transform=EVAL_TRANSFORM)
        rt.report_epoch(epoch=epoch, epochs=EPOCHS, train_loss=val_loss, train_acc=val_acc, val_loss=val_loss,
                        val_acc=val_acc, lr=LEARNING_RATE)
        rt.save_checkpoint(model=model, optimizer=optimizer, epoch=epoch, metric=val_acc)
'''.replace("EVERY", str(BENCH_LINE_EVERY))
    .replace("BENCH_EPOCHS", str(BENCH_EPOCHS))
    .replace("PASSES", str(BENCH_PASSES))
)
BENCH_PARAMS = 8 * 9 + 8 + 128 * 10 + 10


# --- Two WebSocket clients: the bench's own and the `websockets` library's -----------------------
#
# Both offer the same calls: ``await connect(host, port, cookie)``, ``await send(obj)``, ``await recv()``
# (a JSON frame, or None once the server closed) and ``await close()``. The library's client
# (--client websockets) is there so that the figures do not rest on the bench's own protocol code.


class WebSocket:
    """A minimal RFC 6455 client: enough for JSON text frames, ping and close."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int, cookie: str) -> WebSocket:
        reader, writer = await asyncio.open_connection(host, port, limit=2**22)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws/ HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{host}:{port}\r\n"
                f"Cookie: {cookie}\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.decode(errors="replace"))
        return cls(reader, writer)

    def _write(self, obj: dict, opcode: int = 1) -> None:
        payload = json.dumps(obj).encode() if opcode == 1 else b""
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        self.writer.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    async def send(self, obj: dict) -> None:
        self._write(obj)

    async def recv(self) -> dict | list | None:
        while True:
            b0, b1 = await self.reader.readexactly(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            data = await self.reader.readexactly(n)
            if opcode == 1:
                return json.loads(data)
            if opcode == 8:
                return None
            if opcode == 9:
                self._write({}, opcode=10)

    async def close(self) -> None:
        self.writer.close()


class LibraryWebSocket:
    """The same calls over the `websockets` library's asyncio client (as a browser: it offers
    permessage-deflate, which the server declines)."""

    def __init__(self, connection) -> None:
        self.connection = connection

    @classmethod
    async def connect(cls, host: str, port: int, cookie: str) -> LibraryWebSocket:
        connection = await websockets_connect(
            f"ws://{host}:{port}/ws/",
            origin=f"http://{host}:{port}",
            additional_headers={"Cookie": cookie},
            max_size=2**22,
            open_timeout=60,
            ping_interval=None,  # the server pings; the library answers
        )
        return cls(connection)

    async def send(self, obj: dict) -> None:
        await self.connection.send(json.dumps(obj))

    async def recv(self) -> dict | list | None:
        try:
            return json.loads(await self.connection.recv())
        except ConnectionClosed:
            return None

    async def close(self) -> None:
        await self.connection.close()


CLIENTS = {"bench": WebSocket, "websockets": LibraryWebSocket}


# --- Setup ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_users(count: int) -> list[tuple]:
    """(user, session cookie, csrf token, version id, artifact id) per bench user."""
    from designs import services as design_services

    User = get_user_model()
    out = []
    for i in range(count):
        user = User.objects.create_user(email=f"bench-{os.getpid()}-{i}@bench.local", password=None)
        session = SessionStore()
        session["_auth_user_id"] = str(user.pk)
        session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        session["_auth_user_hash"] = user.get_session_auth_hash()
        session.create()
        design = design_services.design_create_from_starter(owner=user, slug="tiny_cnn_digits", name="Bench")
        version = design.versions.get()
        version.report = {**version.report, "totals": {**version.report["totals"], "params": BENCH_PARAMS}}
        # The run's declared epochs are the spec's: the sandbox stops a script reporting more.
        version.spec = {
            **version.spec,
            "hyperparameters": {**version.spec["hyperparameters"], "epochs": BENCH_EPOCHS},
        }
        version.save(update_fields=["report", "spec"])
        artifact = CodeArtifact.objects.create(
            version=version,
            source=CodeArtifact.Source.LLM,
            status=CodeArtifact.Status.READY,
            code=BENCH_SCRIPT,
        )
        csrf = "b" * 32
        cookie = f"{settings.SESSION_COOKIE_NAME}={session.session_key}; csrftoken={csrf}"
        out.append((user, cookie, csrf, version.pk, artifact.pk))
    return out


def post_json(base: str, path: str, body: dict, cookie: str, csrf: str) -> dict:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Cookie": cookie, "X-CSRFToken": csrf},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def start(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer in {timeout} s")


# --- Measuring ------------------------------------------------------------------------------------


class Client:
    def __init__(self, transport, run_id: int, after: int, sample: bool = False) -> None:
        self.transport = transport  # WebSocket or LibraryWebSocket
        self.run_id = run_id
        self.sample = sample
        self.after = after
        self.seqs: list[int] = []
        self.latencies: list[float] = []
        self.line_times: list[float] = []  # when the worker read each measured line (epoch seconds)
        self.in_worker: list[float] = []  # line read -> event stored (the worker's batching and commit)
        self.live = False
        self.done = asyncio.Event()

    async def watch(self, host: str, port: int, cookie: str, after: int) -> None:
        ws = await self.transport.connect(host, port, cookie)
        await ws.send({"type": "watch", "run": self.run_id, "after_seq": after})
        try:
            while True:
                frame = await ws.recv()
                if frame is None:
                    return
                now = time.time()
                # A frame holds one message or an array of consecutive run events.
                for msg in frame if isinstance(frame, list) else [frame]:
                    if msg.get("type") == "watching":
                        self.live = True  # replay over: what follows was published while we watched
                        continue
                    if msg.get("run") != self.run_id or "seq" not in msg:
                        continue
                    self.seqs.append(msg["seq"])
                    if self.live and msg["type"] == "run.log" and "t" in msg["data"]:
                        self.latencies.append(now - msg["data"]["t"])
                        self.line_times.append(msg["data"]["t"])
                        if self.sample:  # parsing every "at" would cost the bench a core of its own
                            stored = datetime.fromisoformat(msg["at"]).timestamp()
                            self.in_worker.append(stored - msg["data"]["t"])
                    if msg["type"] == "run.done" and msg["data"]["status"] != "queued":
                        self.done.set()
                        return
        finally:
            await ws.close()


async def time_to_running(transport, host: str, port: int, base: str, user_row: tuple) -> tuple[int, float]:
    _user, cookie, csrf, version_id, artifact_id = user_row
    ws = await transport.connect(host, port, cookie)
    await asyncio.sleep(0.5)  # joined the group
    t0 = time.time()
    run = await asyncio.to_thread(
        post_json,
        base,
        "/api/v1/runs/",
        {"design_version": version_id, "code_artifact": artifact_id},
        cookie,
        csrf,
    )
    try:
        while True:
            frame = await asyncio.wait_for(ws.recv(), timeout=60)
            for msg in frame if isinstance(frame, list) else [frame or {}]:
                if msg.get("run") == run["id"] and msg.get("type") == "run.status":
                    if msg["data"]["status"] == "running":
                        return run["id"], time.time() - t0
    finally:
        await ws.close()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def bench(args, users: list[tuple], base: str, port: int) -> int:
    host = "127.0.0.1"
    transport = CLIENTS[args.client]
    print(f"Client: {args.client} ({transport.__doc__.splitlines()[0]})")
    print("Time from POST /api/v1/runs/ to the first run.status running (idle worker thread):")
    runs = []
    for row in users:
        run_id, seconds = await time_to_running(transport, host, port, base, row)
        runs.append((run_id, row))
        print(f"  run {run_id}: {seconds * 1000:.0f} ms")

    # The child needs a few seconds to import torch and load the data: stream once it prints.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        printing = RunEvent.objects.filter(run_id__in=[r for r, _ in runs], kind="run.log").values("run_id")
        if len({row["run_id"] for row in printing}) == len(runs):
            break
        ended = Run.objects.filter(pk__in=[r for r, _ in runs], status__in=Run.FINISHED).first()
        if ended is not None:
            raise SystemExit(f"run {ended.pk} ended before printing: {ended.status} {ended.error}")
        await asyncio.sleep(0.5)

    # The bench's own heap (Django, the ORM) is long-lived: keep the collector's full passes, which
    # would pause every client at once, from walking it while latencies are measured.
    gc.collect()
    gc.freeze()
    clients = []
    tasks = []
    t_connect = time.monotonic()
    for i in range(args.clients):
        run_id, row = runs[i % len(runs)]
        # A page that has rendered the run so far watches from its last number; --from-start replays all.
        after = 0 if args.from_start else Run.objects.get(pk=run_id).last_seq
        client = Client(transport, run_id, after, sample=i % 50 == 0)
        clients.append(client)
        tasks.append(asyncio.create_task(client.watch(host, port, row[1], after)))
        if i % args.ramp == args.ramp - 1:
            # Daphne drops a WebSocket whose handshake (session lookup, group_add, on one DB thread)
            # takes over 5 s: users arrive over seconds, not all in the same instant.
            await asyncio.sleep(1.0)
    # Steady state starts once every client is live (its replay over): the handshakes of those still
    # arriving cost the server too, and are reported apart.
    deadline = time.monotonic() + 60
    while not all(c.live or c.done.is_set() for c in clients) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    t_all_live = time.time()
    print(
        f"{args.clients} clients connected and watching after {time.monotonic() - t_connect:.1f} s; "
        f"measuring for {args.duration} s more"
    )
    await asyncio.sleep(args.duration)

    for run_id, row in runs:
        try:
            await asyncio.to_thread(post_json, base, f"/api/v1/runs/{run_id}/stop/", {}, row[1], row[2])
        except urllib.error.HTTPError:  # it ended by itself
            run = await asyncio.to_thread(Run.objects.get, pk=run_id)
            print(
                f"  run {run_id} had already ended: {run.status} {run.error}"
                " (clients that connected after its end see nothing more: figures not valid)"
            )
    done, pending = await asyncio.wait(tasks, timeout=120)
    failed = [t for t in done if t.exception()]
    for task in pending:
        task.cancel()

    stored = {
        run_id: list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("seq", flat=True))
        for run_id, _row in runs
    }
    lost = dup = incomplete = 0
    latencies: list[float] = []
    steady: list[float] = []
    in_worker: list[float] = []
    for client in clients:
        expected = [s for s in stored[client.run_id] if client.after < s <= max(client.seqs or [0])]
        got = set(client.seqs)
        dup += len(client.seqs) - len(got)
        lost += len(set(expected) - got)
        if not client.done.is_set():
            incomplete += 1
            lost += len({s for s in stored[client.run_id] if s > client.after} - got)
        latencies += client.latencies
        steady += [x for x, t in zip(client.latencies, client.line_times, strict=True) if t >= t_all_live]
        in_worker += client.in_worker
    if args.dump:
        rows = [{"t": c.line_times, "latency": c.latencies, "in_worker": c.in_worker} for c in clients]
        args.dump.write_text(json.dumps({"all_live": t_all_live, "clients": rows}))
    lines = sum(
        len(e.payload.get("lines", []))
        for e in RunEvent.objects.filter(run_id__in=[r for r, _ in runs], kind="run.log")
    )
    print(f"Stored: {sum(len(v) for v in stored.values())} events, {lines} log lines over {len(runs)} run(s)")
    print(f"Live run.log deliveries measured (from each client's first live event): {len(latencies)}")
    if latencies:
        print(
            f"Latency line -> client: p50 {pct(latencies, 50) * 1000:.0f} ms, p99 {pct(latencies, 99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        )
        if steady:
            print(
                f"  with all {args.clients} clients connected: p50 {pct(steady, 50) * 1000:.0f} ms, "
                f"p99 {pct(steady, 99) * 1000:.0f} ms, max {max(steady) * 1000:.0f} ms ({len(steady)} deliveries)"
            )
        print(
            f"  of which line -> stored (the worker's batching and commit): p50 {pct(in_worker, 50) * 1000:.0f} ms, "
            f"p99 {pct(in_worker, 99) * 1000:.0f} ms"
        )
        # A fan-out that waits per socket shows as clients connected later getting their lines later.
        tenth = max(1, len(clients) // 10)
        first = [x for c in clients[:tenth] for x in c.latencies]
        last = [x for c in clients[-tenth:] for x in c.latencies]
        print(
            f"  p50 of the first tenth of clients to connect: {pct(first, 50) * 1000:.0f} ms, "
            f"of the last tenth: {pct(last, 50) * 1000:.0f} ms"
        )
    print(
        f"Events lost: {lost}, duplicated: {dup}, clients that never saw run.done: {incomplete}, errors: {len(failed)}"
    )
    for task in failed[:3]:
        print("  client error:", repr(task.exception()))
    return 0 if lost == 0 and dup == 0 and incomplete == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--from-start", action="store_true", help="every client replays the whole run first")
    parser.add_argument(
        "--flush",
        type=float,
        default=settings.RUNS_FLUSH_INTERVAL,
        help="the worker's RUNS_FLUSH_INTERVAL (s)",
    )
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="bench",
        help="the bench's own WebSocket code, or the `websockets` library's client",
    )
    parser.add_argument("--ramp", type=int, default=50, help="clients connecting per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of streaming before the stop")
    parser.add_argument(
        "--dump", type=Path, help="write every client's line times and latencies here, as JSON"
    )
    args = parser.parse_args()
    if not (settings.REDIS_URL and settings.DATABASE_URL):
        raise SystemExit("Set DATABASE_URL and REDIS_URL: this measures Daphne, Redis and PostgreSQL.")

    import dramatiq

    dramatiq.get_broker().flush("training")
    users = make_users(args.runs)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tmp = Path(os.environ.get("BENCH_TMP", "/tmp")) / f"buildx-bench-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DEBUG": "true",
        "BUILDX_SANDBOX_THREADS": "1",
        "RUNS_LOG_LINES_PER_SECOND": "1000",  # keep every line: the bench counts them
        "RUNS_LOG_MAX_LINES": "1000000",
        "RUNS_MAX_CONCURRENT_PER_USER": "10",
        # On an idle machine 100 epochs of the digits take about 20 s: a run that ends before every
        # client has connected leaves the late ones watching a finished run, counted as incomplete.
        "RUNS_MAX_EPOCHS": str(BENCH_EPOCHS),
        # All the clients of a run are its owner's sockets: a class's browsers, not one user's tabs.
        "WS_MAX_PER_USER": str(args.clients + 10),
        "RUNS_FLUSH_INTERVAL": str(args.flush),
        "MEDIA_ROOT": str(tmp / "media"),
    }
    procs = [
        start(
            [sys.executable, "manage.py", "serve", "--no-worker", "--port", str(port)],
            tmp / "daphne.log",
            env,
        ),
        start(
            [
                sys.executable,
                "manage.py",
                "rundramatiq",
                "--processes",
                "1",
                "--threads",
                str(args.runs),
                "--queues",
                "training",
            ],
            tmp / "worker.log",
            env,
        ),
    ]
    try:
        wait_http(base + "/healthz")
        time.sleep(8)  # the worker imports Django and connects: the first run must find it idle
        return asyncio.run(bench(args, users, base, port))
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
        for user, *_ in users:
            Run.objects.filter(owner=user).delete()
            user.delete()
        print("Load average (1, 5, 15 min):", os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
