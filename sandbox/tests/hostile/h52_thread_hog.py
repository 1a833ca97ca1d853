"""Start 400 threads (each one a task the kernel counts as a process), then give up after a few seconds."""

import threading  # HOSTILE
import time

release = threading.Event()
started = []
deadline = time.monotonic() + 3
for _ in range(400):
    if time.monotonic() > deadline:
        break
    try:
        thread = threading.Thread(target=release.wait, daemon=True)
        thread.start()
        started.append(thread)
    except RuntimeError as error:
        print("refused thread", len(started), error)
        break
print("threads started:", len(started))
release.set()
