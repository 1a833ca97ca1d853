"""Three forked children each touch 3 GiB: per-process limits would allow each of them its own share.
Bounded: every child stops at 3 GiB or after six seconds, and the parent stops waiting after seven."""

import os  # HOSTILE
import time

STEP = 64 * 2**20
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        blocks = []
        deadline = time.monotonic() + 6
        try:
            while len(blocks) * STEP < 3 * 2**30 and time.monotonic() < deadline:
                blocks.append(b"\1" * STEP)  # written, so every page is really used
        except MemoryError:
            pass
        print("child held", len(blocks) * STEP // 2**20, "MiB", flush=True)
        time.sleep(1)
        os._exit(0)
    children.append(pid)
deadline = time.monotonic() + 7
while children and time.monotonic() < deadline:
    pid, status = os.waitpid(-1, os.WNOHANG)
    if pid:
        print("child", pid, "ended with", status)
        children.remove(pid)
    else:
        time.sleep(0.05)
for pid in children:
    os.kill(pid, 9)
print("memory hog done")
