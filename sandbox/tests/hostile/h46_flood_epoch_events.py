"""Flood the events pipe with 20,000 epoch reports: every one costs the database, the broker and every
browser watching the run."""

import json
import os  # HOSTILE

fd = int(os.environ["BUILDX_EVENTS_FD"])
line = json.dumps({"kind": "epoch", "epoch": 1, "epochs": 1, "train_loss": 0.1, "val_acc": 0.99}).encode()
sent = 0
try:
    for _ in range(20_000):
        os.write(fd, line + b"\n")
        sent += 1
except OSError as error:
    print("stopped after", sent, error)
print("sent", sent)
