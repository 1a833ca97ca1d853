"""Claim a perfect test accuracy on the events pipe and leave before anything can measure the model."""

import json
import os  # HOSTILE

fd = int(os.environ["BUILDX_EVENTS_FD"])
forged = {"kind": "result", "test": {"accuracy": 1.0, "loss": 0.0, "per_class": [1.0] * 10}}
os.write(fd, json.dumps(forged).encode() + b"\n")
os._exit(0)
