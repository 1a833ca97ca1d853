"""One status event of 60 kB: a line the platform would store, broadcast and render."""

import json
import os  # HOSTILE

fd = int(os.environ["BUILDX_EVENTS_FD"])
event = {"kind": "status", "status": "running", "device": "cpu " * 15_000, "torch": "2", "params": 1}
os.write(fd, json.dumps(event).encode() + b"\n")
print("sent", len(json.dumps(event)), "bytes")
