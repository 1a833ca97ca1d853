"""Flood stdout and the events pipe with two-byte lines: the worker parses every one of them while the
script, blocked on full pipes, spends almost no CPU time of its own. Never ends."""

import os  # HOSTILE

fd = int(os.environ["BUILDX_EVENTS_FD"])
chunk = b"x\n" * 32_768
while True:
    os.write(fd, chunk)
    os.write(1, chunk)
