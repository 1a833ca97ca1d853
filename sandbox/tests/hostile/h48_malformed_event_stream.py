"""A malformed event stream at a high rate: two megabytes of garbage and unknown kinds, then known kinds
that break their schema, as fast as the pipe takes them."""

import os  # HOSTILE
import time

fd = int(os.environ["BUILDX_EVENTS_FD"])
garbage = b'\x00\xff not json\n[1, 2]\n{"kind": "nonsense"}\n"a string"\n' * 2_000
broken = b'{"kind": "progress", "epoch": "one", "epochs": [], "batch": null}\n'
deadline = time.monotonic() + 5
try:
    for _ in range(20):
        os.write(fd, garbage)
    while time.monotonic() < deadline:
        os.write(fd, broken + garbage)
except OSError as error:
    print("stopped", error)
