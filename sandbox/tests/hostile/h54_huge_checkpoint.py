"""Announce checkpoints far larger than the model could weigh (there is no model at all), and keep one
growing while the worker copies it."""

import json
import time

with open("checkpoints/best.safetensors", "wb") as f:  # HOSTILE
    f.write(b"\1" * (6 * 2**20))
with open("checkpoints/best.json", "w") as f:
    f.write(json.dumps({"epoch": 1}))
with open("checkpoints/last.json", "w") as f:
    f.write(json.dumps({"epoch": 1}))
events = open(3, "w", closefd=False)
growing = open("checkpoints/last.safetensors", "wb")
growing.write(b"\2" * 2**18)
growing.flush()
for name in ("best", "last"):
    events.write(json.dumps({"kind": "checkpoint", "epoch": 1, "name": name, "metric": 0.1}) + "\n")
events.flush()
try:
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        growing.write(b"\2" * 2**20)
        growing.flush()
except OSError as error:
    print("refused", error)
print("checkpoints written")
