"""One box cannot break another: each has a uid of its own and a control group for its whole tree.

Before, every sandbox ran as uid 65534: RLIMIT_NPROC counted one student's 250 threads against a
classmate, whose run then failed to start its own ("libgomp: Thread creation failed"); and the memory
limit was per process, so three forked children held three times the "limit".
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sandbox.engine import datasets as ds
from sandbox.launcher import host, python_executable
from sandbox.runner import run_script

DIGITS_SCRIPT = Path(__file__).parent / "scripts" / "digits_cnn.py"
HANG_S = 1200  # a wall limit that only ends a hang: nothing here is expected to take it

THREAD_HOG = """
import threading, time
stop = threading.Event()
threads = [threading.Thread(target=stop.wait) for _ in range(300)]
for t in threads:
    t.start()
print("holding", threading.active_count(), "threads", flush=True)
time.sleep(3600)  # until the test stops it, once the ordinary run is over
"""

MEMORY_HOG = """
import os, time
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        block = bytearray(3 * 2**30)  # zero-filled: every page is touched
        time.sleep(20)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
print("all three children held 3 GiB", flush=True)
"""


@pytest.fixture
def limits(settings):
    settings.BUILDX_SANDBOX = "bwrap"
    settings.BUILDX_SANDBOX_MEMORY_BYTES = 4 * 2**30
    settings.BUILDX_SANDBOX_PROCESSES = 512
    settings.BUILDX_SANDBOX_THREADS = 1
    settings.BUILDX_SANDBOX_CPU_SECONDS = 120
    if not host().cgroups_usable:
        pytest.fail(f"this machine should have control groups: {host().problems}")


def test_a_thread_hog_and_a_memory_hog_beside_it_do_not_stop_an_ordinary_run(limits, tmp_path):
    folder = tmp_path / "data"
    cache = ds.ensure_cache("digits", data_dir=folder, cache_dir=folder)
    results: dict[str, object] = {}
    events: dict[str, list[dict]] = {"threads": [], "memory": [], "ordinary": []}
    holding = threading.Event()
    finished = threading.Event()

    def hog(name: str, code: str, wall: float, should_stop) -> None:
        def on_event(event: dict) -> None:
            events[name].append(event)
            if event.get("line", "").startswith("holding"):
                holding.set()

        results[name] = run_script(code=code, run_dir=tmp_path / name, config={}, on_event=on_event,
                                   should_stop=should_stop, wall_limit_s=wall, check_code=False,
                                   entry=[python_executable(), "-s", "script.py"])  # fmt: skip

    # The thread hog holds its threads until the ordinary run is over. The memory hog is never asked
    # to stop: it ends when its group's limit kills it, however long filling 4 GiB takes on a busy
    # machine (before, the ordinary run could finish first and cancel it just under the limit). The wall
    # limits only bound a hang: the hog's 40 s ran out before a 10-epoch run beside it ended at load 8,
    # and the hog then ended by timeout instead of being stopped with the others done.
    threads = threading.Thread(target=hog, args=("threads", THREAD_HOG, HANG_S, finished.is_set))
    threads.start()
    assert holding.wait(HANG_S), events["threads"]
    memory = threading.Thread(target=hog, args=("memory", MEMORY_HOG, HANG_S, lambda: False))
    memory.start()
    config = {
        "resume": False,
        "checkpoint_dir": "checkpoints",
        "expect": {"params": 9930, "output_shape": [10]},
        "val_split": 0.1,
        "seed": 42,
        "max_epochs": 50,
        "epochs": 10,
        "device": "cpu",
    }
    ordinary = run_script(code=DIGITS_SCRIPT.read_text(), run_dir=tmp_path / "ordinary", config=config,
                          dataset=ds.training_cache(cache), on_event=events["ordinary"].append,
                          should_stop=lambda: False, wall_limit_s=HANG_S)  # fmt: skip
    finished.set()
    memory.join()
    threads.join()

    assert ordinary.status == "succeeded", (ordinary.cause, events["ordinary"][-5:])
    assert [e["epoch"] for e in events["ordinary"] if e["kind"] == "epoch"] == list(range(1, 11))
    hogged = results["memory"]
    assert hogged.status == "failed" and hogged.killed_for == "memory", hogged
    assert hogged.cause.startswith("The script used more than its 4096 MB of memory (all its processes")
    assert results["threads"].status == "cancelled"  # it held its 300 threads to the end
    assert hogged.memory_peak is not None and hogged.memory_peak <= 4 * 2**30 + 2**20
    uids = {
        r.isolation[[i.startswith("uid ") for i in r.isolation].index(True)]
        for r in (ordinary, *results.values())
    }
    assert len(uids) == 3  # three boxes, three uids
