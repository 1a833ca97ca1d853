"""Running the hostile corpus (hostile/): shared by test_hostile_corpus.py and bench/hostile_corpus.py.

A script runs two ways: in a box started for it (`run_cold`, sandbox.runner.run_script) and in a box
started ahead of time (`run_through_check_path`, sandbox.checks.run_check); with the static check on
or off. Its events go to a stand-in for the worker, which copies checkpoints as the training app does.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from sandbox import checks, files, runner
from sandbox.launcher import Box, python_executable
from sandbox.supervisor import SandboxResult

HOSTILE_DIR = Path(__file__).parent / "hostile"
SCRIPTS = sorted(HOSTILE_DIR.glob("h*.py"))
SECRET = "buildx-test-secret-7f3a9c"
DB_PASSWORD = "db-password-51e0b2"
NEIGHBOUR_SECRET = "another-runs-checkpoint-3c81d4"  # in a file outside the box, as another run's
SECRETS = (SECRET, DB_PASSWORD, NEIGHBOUR_SECRET)
DIGITS_PARAMS = 9930
# The training app copies a checkpoint only if it is no larger than its model can weigh (weights and
# optimizer slots in float64, plus a margin); this is the same rule with a smaller margin.
CHECKPOINT_BOUND = 8 * 4 * DIGITS_PARAMS + 2**20
CHECKPOINT_META_BOUND = 2**20
ESCAPE_PATHS = [
    Path("/tmp/buildx-escape.txt"),
    Path("/root/buildx-escape.txt"),
    Path("/work/buildx-escape.txt"),
]
# The scripts print these words only when an attempt got through.
BREACH_WORDS = ("CONNECTED", "ROOT", "UNSHARED", "HARDLINKED", "DOWNLOADED", "RAISED")

SMALL_LIMITS: dict[str, Any] = {  # settings for the hostile runs
    "BUILDX_SANDBOX": "bwrap",
    "BUILDX_ALLOW_UNSANDBOXED_LLM_CODE": False,
    "BUILDX_SANDBOX_PRESPAWN": 1,
    "BUILDX_SANDBOX_CPU_SECONDS": 20,
    "BUILDX_SANDBOX_MEMORY_BYTES": 1536 * 2**20,  # the harness holds torch in ~400 MB
    "BUILDX_SANDBOX_PROCESSES": 64,
    "BUILDX_SANDBOX_OPEN_FILES": 256,
    "BUILDX_SANDBOX_FILE_BYTES": 8 * 2**20,
    "BUILDX_SANDBOX_DISK_BYTES": 24 * 2**20,
    "BUILDX_SANDBOX_TMP_BYTES": 8 * 2**20,
    "BUILDX_SANDBOX_OUTPUT_BYTES": 64 * 2**10,
    "BUILDX_SANDBOX_LINE_CHARS": 500,
    "BUILDX_SANDBOX_GRACE_SECONDS": 0.5,
    "BUILDX_SANDBOX_THREADS": 1,
}


@dataclass(frozen=True)
class Expect:
    """What a script that runs must also end with (beyond being contained)."""

    status: str | None = None
    killed_for: str | None = None
    copies: dict[str, str] = field(default_factory=dict)  # checkpoint name -> why the copy was refused
    note: str | None = None  # a platform line that must be there
    threads_below: int | None = None  # the script prints "threads started: N"
    wall: float = 10.0  # seconds: room for a script to end by itself on a busy machine


EXPECT = {
    # Scripts that never end by themselves: a short wall limit ends them and keeps the file short.
    "h14_fork_bomb": Expect(wall=2),
    "h16_infinite_loop": Expect(wall=2),
    "h17_huge_print": Expect(wall=2),
    "h23_signal_games": Expect(wall=2),
    "h38_cpu_burner_threads": Expect(wall=2),
    "h58_tiny_line_flood": Expect(wall=2),
    # Scripts the supervisor stops for what they did, and says so.
    # Memory: they end when the limit is reached, which a loaded machine may take long to get to (at load
    # 11 on two cores, h15 had 1.3 of its 1.5 GB after 10 s): the wall limit is room, not the test.
    "h15_memory_hog": Expect(killed_for="memory", wall=120),
    "h24_events_garbage": Expect(killed_for="events"),
    "h31_disk_filler": Expect(killed_for="disk"),
    "h46_flood_epoch_events": Expect(killed_for="events"),
    "h47_huge_status_event": Expect(killed_for="events"),
    "h48_malformed_event_stream": Expect(killed_for="events"),
    "h53_fork_memory_hog": Expect(killed_for="memory", wall=120),
    "h57_disk_burst": Expect(killed_for="disk"),
    # Checkpoints the worker must refuse to copy, and why.
    "h41_checkpoint_link_self_environ": Expect(copies={"best": "link", "last": "link"}),
    "h42_checkpoint_link_pid1_environ": Expect(copies={"best": "link", "last": "link"}),
    "h43_checkpoint_link_outside": Expect(copies={"best": "link", "last": "link"}),
    "h44_checkpoint_hardlink_fifo_device": Expect(copies={"best": "not_regular", "last": "links"}),
    "h54_huge_checkpoint": Expect(copies={"best": "too_large"}),
    # The rest.
    "h45_forged_result": Expect(status="succeeded", note="The script reported test results itself"),
    "h52_thread_hog": Expect(threads_below=SMALL_LIMITS["BUILDX_SANDBOX_PROCESSES"]),
}


class Canary:
    """A TCP listener on every interface of this machine; records any connection that arrives."""

    def __init__(self) -> None:
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("0.0.0.0", 0))
        self.server.listen(16)
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.connections: list[tuple] = []
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, address = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(address)
            conn.close()

    def hosts(self) -> list[str]:
        hosts = {"127.0.0.1", "localhost"}
        try:
            hosts.update(
                str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
            )
        except OSError:
            pass
        return sorted(hosts)

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.server.close()


def hostile_line(code: str) -> int | None:
    for number, line in enumerate(code.splitlines(), start=1):
        if "# HOSTILE" in line:
            return number
    return None


def run_config(cache: Path) -> dict:
    """What a training run gives the harness."""
    return {
        "mode": "train",
        "dataset_cache": str(cache),
        "resume": False,
        "checkpoint_dir": "checkpoints",
        "expect": {"params": DIGITS_PARAMS, "output_shape": [10]},
        "val_split": 0.1,
        "seed": 42,
        "epochs": 10,
        "max_epochs": 50,
        "device": "cpu",
    }


def check_config(cache: Path) -> dict:
    """What a code check gives the harness (designs.codegen): one batch of one epoch."""
    return run_config(cache) | {"mode": "smoke", "epochs": 1}


@dataclass
class Copy:
    """What the stand-in worker got when it copied checkpoint `name`: bytes, or why it was refused."""

    name: str
    data: bytes = b""
    refused: str | None = None  # a sandbox.files.Refused code, or "missing"


@dataclass
class Outcome:
    result: SandboxResult
    events: list[dict]
    copies: list[Copy]
    run_dir: Path  # cold: kept for inspection; check path: the box's, deleted with it
    cold: bool


class StandInWorker:
    """The events' receiver: keeps them and, on each checkpoint event, copies the checkpoint while the
    child still runs, under the rules of sandbox.files, as training.services does with its own bound."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.events: list[dict] = []
        self.copies: list[Copy] = []

    def on_event(self, event: dict) -> None:
        self.events.append(event)
        if event["kind"] == "checkpoint":
            self.copies.append(self.copy(event["name"]))

    def copy(self, name: str) -> Copy:
        try:
            meta = files.read_bytes(self.run_dir, f"checkpoints/{name}.json", max_bytes=CHECKPOINT_META_BOUND)
            with files.open_regular(
                self.run_dir, f"checkpoints/{name}.safetensors", max_bytes=CHECKPOINT_BOUND
            ) as weights:
                return Copy(name, meta + b"".join(weights.chunks()))
        except files.Refused as refused:
            return Copy(name, refused=refused.code)
        except FileNotFoundError:
            return Copy(name, refused="missing")


def hostile_inputs(canary: Canary, neighbour: Path) -> dict[str, io.BytesIO]:
    """hostile.json: what the scripts aim at, put in the run folder as the worker's read-only input
    (the harness deletes config.json before it imports a script)."""
    data = {"canary_port": canary.port, "canary_hosts": canary.hosts(), "outside_file": str(neighbour)}
    return {"hostile.json": io.BytesIO(json.dumps(data).encode())}


def imports_torch(code: str) -> bool:
    return "import torch" in code


def run_cold(
    code: str, *, check: bool, run_dir: Path | None, config: dict, cache: Path, inputs: dict, wall: float,
    harness: bool | None = None, box: Box | None = None,
) -> Outcome:  # fmt: skip
    """A box started for this run. Without torch, as `python script.py`: the harness would spend
    seconds importing torch before the script's first line. `box` (from runner.open_box, as the runs
    app uses): its own run folder, as a real run's; the caller closes it."""
    harness = imports_torch(code) if harness is None else harness
    run_dir = box.run_dir if box is not None else run_dir
    assert run_dir is not None, "run_cold needs a box or a run folder"
    worker = StandInWorker(run_dir)
    result = runner.run_script(
        code=code,
        run_dir=run_dir,
        config=config,
        on_event=worker.on_event,
        should_stop=lambda: False,
        wall_limit_s=wall + (15 if harness else 0),  # the harness imports torch inside the wall
        entry=None if harness else [python_executable(), "-s", "script.py"],
        check_code=check,
        dataset=cache,
        inputs=inputs,
        box=box,
    )
    return Outcome(result, worker.events, worker.copies, run_dir, cold=True)


def run_through_check_path(
    code: str, *, check: bool, config: dict, cache: Path, inputs: dict, wall: float, box_work_dir: Path,
) -> Outcome:  # fmt: skip
    """sandbox.checks.run_check with a box started ahead of time (BUILDX_SANDBOX_WORK_DIR is
    `box_work_dir`, where that box is the only one)."""
    waiting = wait_for_a_waiting_box(ready=not (check and hostile_line(code)))
    [folder] = [p for p in box_work_dir.iterdir() if p.name.startswith("box-")]
    worker = StandInWorker(folder / "run")  # a box started ahead keeps its run folder in its own
    with contextlib.nullcontext() if check else static_check_off_in_run_check():
        result = checks.run_check(
            code=code,
            config=config,
            dataset=cache,
            on_event=worker.on_event,
            wall_limit_s=wall,
            inputs=inputs,
        )
    rejected = check and hostile_line(code) is not None  # refused before a box is taken
    if (waiting in checks.waiting_pids()) != rejected:
        raise RuntimeError("run_check did not use the box started ahead of time, or used it for nothing")
    return Outcome(result, worker.events, worker.copies, folder / "run", cold=False)


def static_check_off_in_run_check() -> contextlib.AbstractContextManager:
    """run_check has no switch for the static check: it finds nothing here, as run_script's
    check_code=False does on the cold path, to show what the box alone holds."""
    return mock.patch.object(checks, "check_script", lambda code: [])


def wait_for_a_waiting_box(*, ready: bool, timeout: float = 300) -> int:
    """The pid of the box started ahead that run_check takes next; with `ready`, once its harness has
    imported torch and blocks reading stdin. The wall limit counts from the moment the box is told to
    go: a box still importing torch would spend it on the import, and the script might never run."""
    checks.prepare()
    deadline = time.monotonic() + timeout
    while True:
        pids = checks.waiting_pids()
        if not pids:
            raise RuntimeError("no box was started ahead of time (is bubblewrap there?)")
        if not ready or any(reads_stdin(pid) for pid in descendants(pids[0])):
            return pids[0]
        if time.monotonic() > deadline:
            raise RuntimeError("the box started ahead of time never got ready")
        time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        found.append(parent)
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as f:
                stack += [int(child) for child in f.read().split()]
        except OSError:
            continue
    return found


def reads_stdin(pid: int) -> bool:
    """Whether `pid`'s main thread is blocked in read(0, ...) (/proc/<pid>/syscall: number, then fd)."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            return f.read().split()[:2] == ["0", "0x0"]
    except OSError:
        return False
