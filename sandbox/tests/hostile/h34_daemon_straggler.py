"""Leave a daemon behind that keeps the output pipe open and writes outside later."""

import os  # HOSTILE
import time

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for _ in range(30):
            time.sleep(0.5)
            print("still here", flush=True)
            try:
                open("/tmp/buildx-escape.txt", "w").write("late")
            except OSError:
                pass
        os._exit(0)
    os._exit(0)
print("parent leaves")
