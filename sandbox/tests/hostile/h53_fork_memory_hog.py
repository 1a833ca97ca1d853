"""Three forked children each touch 3 GiB: per-process limits would allow each of them its own share.
Bounded by memory, not by time (a busy machine may take long to get there): every child stops at 3 GiB,
and the run's wall limit ends the rest."""

import os  # HOSTILE
import time

STEP = 64 * 2**20
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        blocks = []
        try:
            while len(blocks) * STEP < 3 * 2**30:
                blocks.append(b"\1" * STEP)  # written, so every page is really used
        except MemoryError:
            pass
        print("child held", len(blocks) * STEP // 2**20, "MiB", flush=True)
        time.sleep(1)
        os._exit(0)
    children.append(pid)
while children:
    pid, status = os.waitpid(-1, 0)
    print("child", pid, "ended with", status)
    children.remove(pid)
print("memory hog done")
